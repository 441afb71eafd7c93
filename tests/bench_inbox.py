"""Inbox pages over a journal of many requests: ``python -m tests.bench_inbox [N] [--rounds R]``.

Fills (once, ``tests.history``) or reuses a journal of N requests (default 100,000) on the embedded
database, starts the inbox as its own process, signs in as a dispatcher the way a browser does, and
fetches each page R times: the queues, the list partial the live view reloads, conversations, request
cards, the journal unfiltered, filtered and several pages deep (by key), search (numbers, phones,
addresses, surnames, words) and a month's XLSX export. Prints p50, p95 and the slowest per page, and the
inbox process's resident memory before and after the exports (a streamed export keeps it flat).
Figures are from SecantusDB (embedded, one process); production MongoDB differs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

from app.embedded import EmbeddedDatabase, free_port
from journal.repository import Journal
from journal.users import Users
from tests.bench import REPO, delete_topology, start, stop
from tests.helpers import Dispatcher
from tests.history import DATABASE, OPEN_SECONDS, PER_DAY, fill_directory

NEXT_PAGE = re.compile(r'href="(/inbox/journal\?[^"]*after=[^"]+)"')


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def timed(times: dict[str, list[float]], name: str, dispatcher: Dispatcher, path: str) -> str:
    started = time.perf_counter()
    status, text = await dispatcher.get(path)
    times.setdefault(name, []).append((time.perf_counter() - started) * 1000)
    if status != 200:
        raise RuntimeError(f"{name}: HTTP {status}: {text[:300]}")
    return text


async def sample_requests(journal: Journal, total: int, rng: random.Random, size: int = 200) -> list[dict]:
    """Requests spread over the history, each found in an hour's window of the registration index: the
    embedded server's ``$sample`` reads the whole collection (over 30 s at a million)."""
    span = timedelta(days=max(30.0, total / PER_DAY))
    now = datetime.now(UTC)
    found: list[dict] = []
    for _ in range(size * 3):
        if len(found) >= size:
            break
        at = now - span * rng.random()
        cursor = journal.requests.find(
            {"registered_at": {"$gte": at, "$lt": at + timedelta(hours=1)}},
            {"conversation_id": 1, "contact": 1, "address": 1},
        ).limit(1)
        found.extend([d async for d in cursor])
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("requests", type=int, nargs="?", default=100_000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    filled = REPO / "var" / "bench" / f"journal-{args.requests}"
    await fill_directory(filled, args.requests)
    database = EmbeddedDatabase("127.0.0.1", free_port(), filled / "db", cache_size="1G")
    database.start(timeout=OPEN_SECONDS)
    workdir = Path(tempfile.mkdtemp(prefix="adshub-bench-inbox-"))
    port = free_port()
    login, password = f"bench{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    rng = random.Random(11)
    prefix = f"bench-inbox-{uuid.uuid4().hex[:8]}"
    try:
        journal = Journal.connect(database.url + "?retryWrites=false", DATABASE)
        await Users(journal).add(login, password, "manager", name="Ночной диспетчер")
        total = await journal.requests.estimated_document_count()
        sample = await sample_requests(journal, total, rng)
        await journal.close()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "ADSHUB_MONGO_URL": f"{database.url}{DATABASE}?retryWrites=false",
            "ADSHUB_HTTP_PORT": str(port),
            "ADSHUB_BUS_PREFIX": prefix,
            "ADSHUB_LOG_LEVEL": "WARNING",
            "ADSHUB_EMBEDDED_DB": "false",
            "ADSHUB_DATA_DIR": str(workdir / "var"),
        }
        started = time.perf_counter()
        inbox = start([sys.executable, "-m", "app", "run", "inbox"], env, port, workdir / "inbox.log", timeout=900.0)
        print(f"journal: {total:,} requests (embedded SecantusDB; production MongoDB differs)")
        print(f"inbox up in {time.perf_counter() - started:.1f} s")
        dispatcher = Dispatcher(f"http://127.0.0.1:{port}")
        times: dict[str, list[float]] = {}
        try:
            status, _ = await dispatcher.login(login, password)
            assert status == 200, status
            started = time.perf_counter()
            await dispatcher.get("/inbox/search?q=" + quote("Ленина 5"))
            print(f"search index ready {time.perf_counter() - started:.1f} s after the first search")
            month_ago = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%d")
            today = datetime.now(UTC).strftime("%Y-%m-%d")
            for _ in range(args.rounds):
                doc = rng.choice(sample)
                contact, address = doc.get("contact") or {}, doc.get("address") or {}
                await timed(times, "queues", dispatcher, "/inbox/")
                await timed(times, "list partial", dispatcher, "/inbox/partials/list")
                await timed(times, "conversation", dispatcher, f"/inbox/c/{quote(doc['conversation_id'])}")
                await timed(times, "request card", dispatcher, f"/inbox/r/{doc['_id']}")
                first = await timed(times, "journal", dispatcher, "/inbox/journal")
                link = NEXT_PAGE.search(first)
                for _ in range(3):
                    if link is None:
                        break
                    page = await timed(times, "journal next page", dispatcher, link.group(1).replace("&amp;", "&"))
                    link = NEXT_PAGE.search(page)
                filters = rng.choice(
                    [
                        {"category": "water_accident"},
                        {"status": "done", "from": month_ago, "to": today},
                        {"address": f"{address.get('street')} {address.get('house')}"},
                        {"breached": "1"},
                        {"channel": "telegram", "category": "elevator_fault"},
                    ]
                )
                await timed(times, "journal filtered", dispatcher, "/inbox/journal?" + urlencode(filters))
                queries = [doc["_id"], f"{address.get('street')} {address.get('house')}", "течёт батарея"]
                if contact.get("phone"):
                    queries.append("8" + str(contact["phone"])[2:])
                if contact.get("name"):
                    queries.append(str(contact["name"]).split()[0])
                query = rng.choice(queries)
                await timed(times, "search", dispatcher, "/inbox/search?q=" + quote(query))
            before = rss_mb(inbox.pid)
            month = urlencode({"from": month_ago, "to": today})
            sizes = []
            for _ in range(3):
                started = time.perf_counter()
                async with dispatcher.http.get(f"{dispatcher.base}/inbox/journal/export?{month}") as response:
                    assert response.status == 200, response.status
                    sizes.append(len(await response.read()))
                times.setdefault("month export (xlsx)", []).append((time.perf_counter() - started) * 1000)
            after = rss_mb(inbox.pid)
        except Exception:
            log = (workdir / "inbox.log").read_text(errors="replace")
            print("inbox log (last lines):\n" + "\n".join(log.splitlines()[-40:]), file=sys.stderr)
            raise
        finally:
            await dispatcher.close()
            stop(inbox)
        print(f"{'page':<22} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        pages: list[float] = []
        for name, values in times.items():
            if name not in ("month export (xlsx)", "search"):
                pages.extend(values)
            print(
                f"{name:<22} {len(values):>4} {statistics.median(values):>8.1f} {percentile(values, 0.95):>8.1f} "
                f"{max(values):>8.1f}"
            )
        print(f"{'all pages':<22} {len(pages):>4} {statistics.median(pages):>8.1f} {percentile(pages, 0.95):>8.1f}")
        print(
            f"export: {sizes[-1] / 2**20:.1f} MB per month; inbox memory {before[0]:.0f} MB before the exports, "
            f"{after[0]:.0f} MB after (peak {before[1]:.0f} → {after[1]:.0f} MB)"
        )
    finally:
        database.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        await delete_topology("amqp://guest:guest@127.0.0.1:5672/", prefix, [])


if __name__ == "__main__":
    asyncio.run(main())
