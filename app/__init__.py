"""The application floor: the composition root. Settings are loaded, the parts built and started here
(``runtime``), the command line (``cli``), the web server factory (``web``) and the embedded database."""
