from adshub.cli import main

raise SystemExit(main())
