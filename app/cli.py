"""The ``adshub`` command: run the hub, classify messages, export the journal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adshub.errors import AdshubError, ConfigurationError
from adshub.logs import configure_logging
from adshub.settings import Settings, load_settings

if TYPE_CHECKING:
    from domain.classify import Classification
    from domain.learned import LinearModel


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adshub", description="Intake hub of an emergency dispatch service (АДС)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the hub (all parts by default)")
    run.add_argument(
        "parts", nargs="*", help="parts to run: router, inbox, channels (all configured), or channels by name"
    )

    classify = sub.add_parser("classify", help='classify JSON Lines from stdin: {"text": ..., "channel": ...}')
    classify.add_argument(
        "--evaluate",
        type=Path,
        metavar="FILE",
        help="score a labeled JSON Lines file (text, category, emergency) instead",
    )
    classify.add_argument("--errors", action="store_true", help="with --evaluate: list the misclassified messages")
    classify.add_argument(
        "--rules-only", action="store_true", help="decide by the rules alone, without the learned model"
    )
    classify.add_argument(
        "--explain", action="store_true", help="show the phrases, rule scores and model scores behind each decision"
    )
    classify.add_argument(
        "--train",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="train the learned model on labeled files (default: the shipped training sets) and report "
        "cross-validated figures",
    )
    classify.add_argument(
        "--journal", action="store_true", help="with --train: add the categories dispatchers corrected in the journal"
    )
    classify.add_argument("--output", type=Path, help="with --train: where to write the model")

    journal = sub.add_parser("journal", help="the journal of requests")
    jsub = journal.add_subparsers(dest="journal_command", required=True)
    export = jsub.add_parser("export", help="export the journal, one row per request")
    export.add_argument("--format", choices=("json", "csv", "xlsx"), default="json")
    export.add_argument("--since", help="first day (YYYY-MM-DD, company time zone)")
    export.add_argument("--until", help="last day (YYYY-MM-DD, company time zone), inclusive")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    user = sub.add_parser("user", help="dispatchers, managers and admins of the inbox")
    usub = user.add_subparsers(dest="user_command", required=True)
    add = usub.add_parser("add", help="add a user")
    add.add_argument("--login", required=True)
    add.add_argument("--password", required=True)
    add.add_argument("--role", required=True, choices=("dispatcher", "manager", "admin"))
    add.add_argument("--name")
    usub.add_parser("list", help="list users")
    disable = usub.add_parser("disable", help="disable a user and end their sessions")
    disable.add_argument("--login", required=True)
    enable = usub.add_parser("enable", help="enable a disabled user")
    enable.add_argument("--login", required=True)
    role = usub.add_parser("role", help="change a user's role")
    role.add_argument("--login", required=True)
    role.add_argument("--role", required=True, choices=("dispatcher", "manager", "admin"))
    mail = sub.add_parser("email", help="the mailbox channel")
    msub = mail.add_subparsers(dest="email_command", required=True)
    inspect = msub.add_parser(
        "inspect", help="how the hub reads raw letters (.eml, mbox-like .box): one JSON object per file"
    )
    inspect.add_argument("files", nargs="+", type=Path, help="letters, or directories of letters")
    buildings = sub.add_parser("buildings", help="the company's buildings directory")
    bsub = buildings.add_subparsers(dest="buildings_command", required=True)
    load = bsub.add_parser(
        "import",
        help="import FILE.csv (columns: street, house, building, structure, entrances, floors, flats, fias, note)",
    )
    load.add_argument("file", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "classify" and args.train is not None:
            return _train(args)
        if args.command == "classify":
            return _classify(args)
        if args.command == "email":
            return _inspect_letters(args.files)
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "run":
            from app.runtime import run

            asyncio.run(run(settings, args.parts))
            return 0
        if args.command == "journal":
            return asyncio.run(_export(settings, args))
        if args.command == "user":
            return asyncio.run(_users(settings, args))
        if args.command == "buildings":
            return asyncio.run(_buildings(settings, args))
    except ConfigurationError as exc:
        print(f"adshub: {exc}", file=sys.stderr)
        return 2
    except AdshubError as exc:
        print(f"adshub: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _train(args: argparse.Namespace) -> int:
    from app.train import TRAINING_SETS, describe, train, training_rows
    from domain.learned import MODEL_PATH

    rows = training_rows(args.train or TRAINING_SETS)
    if args.journal:
        settings = load_settings()
        corrections = asyncio.run(_corrections(settings))
        print(f"dispatchers' corrections from the journal: {len(corrections)}", file=sys.stderr)
        known = {str(r["text"]).strip() for r in rows}
        rows.extend(r for r in corrections if r["text"].strip() not in known)
    print(describe(train(rows, args.output or MODEL_PATH)))
    return 0


async def _corrections(settings: Settings) -> list[dict[str, Any]]:
    from journal.repository import Journal

    journal = Journal.connect(settings.mongo_url, settings.database_name)
    try:
        return await journal.labeled_corrections()
    finally:
        await journal.close()


def _classify(args: argparse.Namespace) -> int:
    from domain.address import extract_address
    from domain.classify import classify, classify_with, rules_only
    from domain.evaluate import evaluate, load_rows
    from domain.learned import default_model
    from domain.phones import extract_phones

    def decide(text: str) -> Classification:
        return rules_only(text)[0] if args.rules_only else classify(text)

    if args.evaluate:
        report = evaluate(load_rows(args.evaluate), decide)
        print(json.dumps(report.summary(), ensure_ascii=False))
        print(report.table(), file=sys.stderr)
        if args.errors:
            for error in report.errors:
                print(json.dumps(error, ensure_ascii=False))
        return 0
    model = None if args.rules_only else default_model()
    out = sys.stdout
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text = item["text"] if isinstance(item, dict) else None
            if not isinstance(text, str):
                raise ValueError("no text")
        except (ValueError, KeyError, TypeError) as exc:
            out.write(json.dumps({"error": f"line {number}: {exc}"}, ensure_ascii=False) + "\n")
            continue
        decided = classify_with(text, model)
        result: dict[str, Any] = decided.as_dict()
        if args.explain:
            result["explanation"] = _explanation(text, model)
        address = extract_address(text)
        result["address"] = address.as_dict() if address else None
        phones = extract_phones(text)
        result["phone"] = phones[0] if phones else None
        if isinstance(item, dict) and "channel" in item:
            result["channel"] = item["channel"]
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    out.flush()
    return 0


def _explanation(text: str, model: LinearModel | None) -> dict[str, Any]:
    """What each half saw: the rules' phrases and scores, the model's likeliest categories and their words."""
    from domain.classify import rules_only

    rules, analysis = rules_only(text)
    explained: dict[str, Any] = {
        "rules": {"category": rules.category.value, "scores": rules.scores, "phrases": list(rules.phrases)}
    }
    if model is not None:
        prediction = model.predict(analysis)
        ranked = sorted(prediction.probabilities.items(), key=lambda item: -item[1])[:3]
        explained["model"] = [
            {"category": c.value, "probability": round(p, 3), "words": dict(prediction.weighed(c)[:5])}
            for c, p in ranked
        ]
    return explained


def letter_report(path: Path) -> dict[str, Any]:
    """What the hub reads from one raw letter, and whether it would answer it; touches no database."""
    from channels.email import EmailSettings
    from channels.letters import read_letter

    try:
        mail = read_letter(path.read_bytes(), EmailSettings.model_fields["email_max_bytes"].default)
    except OSError as exc:
        return {"file": str(path), "error": f"cannot read the file: {exc.strerror or exc}"}
    except Exception as exc:
        return {"file": str(path), "error": f"{type(exc).__name__}: {exc}"}
    return {
        "file": str(path),
        "subject": mail.subject,
        "sender_email": mail.sender_email,
        "sender_name": mail.sender_name,
        "text": mail.text,
        "attachments": [
            {"filename": a.name, "content_type": a.content_type, "size": len(a.data)} for a in mail.attachments
        ],
        "automatic": mail.automatic,
        "would_answer": mail.would_answer,
        "message_id": mail.message_id,
        "in_reply_to": mail.in_reply_to,
        "references": mail.references,
        "too_large": mail.too_large,
    }


def _inspect_letters(paths: Sequence[Path]) -> int:
    """Each file, and every file under each directory given, in name order."""
    for given in paths:
        files = sorted(p for p in given.rglob("*") if p.is_file()) if given.is_dir() else [given]
        for path in files:
            print(json.dumps(letter_report(path), ensure_ascii=False), flush=True)
    return 0


def _day(value: str | None) -> str | None:
    """A day as the journal's filters take it (2026-11-24), refused loudly when it is not one: the filters
    themselves ignore what they cannot read, which on the command line would export everything."""
    if value:
        try:
            datetime.strptime(value, "%Y-%m-%d")
        except ValueError as exc:
            raise ConfigurationError(f"dates look like 2026-11-24, not {value!r}") from exc
    return value


async def _buildings(settings: Settings, args: argparse.Namespace) -> int:
    from domain.buildings import parse_buildings
    from journal.repository import Journal

    docs = parse_buildings(await asyncio.to_thread(args.file.read_bytes))
    journal = Journal.connect(settings.mongo_url, settings.database_name)
    try:
        await journal.prepare()
        count = await journal.save_buildings(docs)
    finally:
        await journal.close()
    print(f"imported {count} buildings")
    return 0


async def _users(settings: Settings, args: argparse.Namespace) -> int:
    from journal.repository import Journal
    from journal.users import Users

    journal = Journal.connect(settings.mongo_url, settings.database_name)
    try:
        await journal.prepare()
        users = Users(journal)
        if args.user_command == "add":
            user = await users.add(args.login, args.password, args.role, args.name)
            print(f"added {user.login} ({user.role})")
        elif args.user_command == "list":
            for doc in await users.list():
                state = "disabled" if doc.get("disabled") else "active"
                print(f"{doc['login']}\t{doc['role']}\t{state}\t{doc.get('name') or ''}")
        elif args.user_command == "enable":
            await users.enable(args.login)
            print(f"enabled {args.login}")
        elif args.user_command == "role":
            await users.set_role(args.login, args.role)
            print(f"{args.login} is now {args.role}")
        else:
            await users.disable(args.login)
            print(f"disabled {args.login}")
    finally:
        await journal.close()
    return 0


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    """The journal written a batch at a time as it is read (as the inbox's export is): a year of requests
    never sits in memory whole."""
    import shutil
    import tempfile

    from app.runtime import channel_directory
    from journal.desk import Desk, JournalFilters
    from journal.export import JournalWorkbook, csv_text, export_row
    from journal.repository import Journal

    days = (("from", _day(args.since)), ("to", _day(args.until)))
    filters = JournalFilters({k: v for k, v in days if v})
    titles = channel_directory(settings).titles()
    zone = settings.zone
    with contextlib.ExitStack() as files:
        out = files.enter_context(args.output.open("wb")) if args.output else sys.stdout.buffer
        spool = files.enter_context(tempfile.TemporaryFile()) if args.format == "xlsx" and not args.output else None
        book = JournalWorkbook(spool or out, zone, titles) if args.format == "xlsx" else None
        if args.format == "csv":
            out.write(csv_text([], zone, titles, header=True).encode("utf-8"))
        journal = Journal.connect(settings.mongo_url, settings.database_name)
        count = 0
        try:
            async for batch in Desk(journal).export_batches(filters, zone):
                rows = [export_row(doc, zone, person) for doc, person in batch]
                if book is not None:
                    await asyncio.to_thread(book.add, rows)
                elif args.format == "csv":
                    out.write(csv_text(rows, zone, titles).encode("utf-8"))
                else:
                    for row in rows:
                        out.write(b",\n" if count else b"[\n")
                        out.write(json.dumps(row, ensure_ascii=False, indent=2).encode("utf-8"))
                        count += 1
        finally:
            await journal.close()
        if book is not None:
            await asyncio.to_thread(book.close)
            if spool is not None:
                spool.seek(0)
                shutil.copyfileobj(spool, out)
        elif args.format == "json":
            out.write(b"\n]\n" if count else b"[]\n")
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
