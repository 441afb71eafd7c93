"""Years of a housing company's journal, written fast: ``python -m tests.history N DIR``.

Fills an embedded database in ``DIR`` with ``N`` requests as the hub leaves them — each with its
resident, conversation, the message that registered it and the hub's reply, its audit entries and met
clocks; most are closed, the last days' still open — spread at about 900 a day (a city operator's
pace), numbered per year with the year's counter where the hub will continue. Documents come from the
journal's own builders (``request_doc``, ``inbound_doc``, ``outbound_doc``) over classified templates,
then are copied with new ids, times and addresses, and written with bulk inserts into the journal's own
indexes. ``make bench`` (``tests.bench --journal``, ``tests.bench_inbox``) reuses a filled directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adshub.contract import Inbound, Outbound, Sender
from app.embedded import EmbeddedDatabase, free_port
from bots.dialogue import Draft
from domain.address import Address, building_key
from domain.classify import classify
from domain.deadlines import DeadlinePolicy, format_number, registration_year
from journal.documents import inbound_doc, outbound_doc, request_doc
from journal.repository import Journal
from tests.bench_search import NAMES, STREETS, SURNAMES, TEXTS, phone

PER_DAY = 900
CHANNELS = ("webchat", "telegram", "vk", "email", "voicemail")
BATCH = 2000
OPEN_DAYS = 3
LATE_SHARE = 0.03
"""Closed requests with a clock missed: what the journal's «сроки нарушены» filter finds."""
"""Requests of the last days are still being worked; older ones are closed. Their clocks already past
are recorded as a running hub's clock watcher leaves them: breached."""


@dataclass
class Template:
    """One classified text with its documents as the hub builds them at time zero."""

    text: str
    request: dict[str, Any]
    inbound: dict[str, Any]
    reply: dict[str, Any]
    clock_offsets: dict[str, timedelta]


@dataclass
class Filled:
    requests: int = 0
    contacts: int = 0
    messages: int = 0
    audit: int = 0
    seconds: float = 0.0
    counters: dict[int, int] = field(default_factory=dict)


def templates(policy: DeadlinePolicy) -> list[Template]:
    zero = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for n, text in enumerate(TEXTS):
        inbound = Inbound(
            id=f"webchat:t{n}:1",
            channel="webchat",
            address=f"t{n}",
            sender=Sender(id=f"t{n}"),
            text=text,
            received_at=zero,
        )
        classification = classify(text)
        draft = Draft(inbound.id, text, classification, None, zero, (inbound.id,))
        contact = {"_id": "c", "name": None, "phones": [], "emails": []}
        request = request_doc(
            number="2026-000000",
            year=2026,
            seq=0,
            draft=draft,
            inbound=inbound,
            contact=contact,  # type: ignore[arg-type]
            conversation_id="webchat:t",
            registered_at=zero,
            policy=policy,
        )
        message = inbound_doc(
            inbound,
            conversation_id="webchat:t",
            contact_id="c",
            request_number="2026-000000",
            classification=classification.as_dict(),
            review_due_at=zero + timedelta(minutes=10),
        )
        reply = outbound_doc(
            Outbound(
                id=f"{inbound.id}#reply",
                channel="webchat",
                address=f"t{n}",
                text="Заявка № 2026-000000 зарегистрирована. Срок: сегодня. Аварийная бригада выезжает.",
                request_number="2026-000000",
                in_reply_to=inbound.id,
                created_at=zero,
            ),
            contact_id="c",
            status="sent",
        )
        offsets = {name: clock["due_at"] - zero for name, clock in (request.get("clocks") or {}).items()}
        out.append(Template(text, dict(request), dict(message), dict(reply), offsets))
    return out


def _copy(value: Any) -> Any:
    """A copy of plain JSON-like data, several times faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _person(i: int, rng: random.Random, start: datetime) -> dict[str, Any]:
    channel = CHANNELS[i % len(CHANNELS)]
    number = phone(rng) if channel != "voicemail" else f"+79{i * 7919 % 10**9:09d}"
    address = {
        "webchat": f"h{i:07d}",
        "telegram": str(100_000_000 + i),
        "vk": str(200_000_000 + i),
        "email": f"resident{i}@example.ru",
        "voicemail": number,
    }[channel]
    named = rng.random() < 0.6
    return {
        "_id": f"h{i:07d}",
        "name": f"{rng.choice(SURNAMES)} {rng.choice(NAMES)}" if named else None,
        "identities": [f"{channel}:{address}"],
        "phones": [number] if channel == "voicemail" or rng.random() < 0.7 else [],
        "emails": [address] if channel == "email" else [],
        "created_at": start,
        "updated_at": start,
        "_channel": channel,
        "_address": address,
    }


async def fill(
    journal: Journal,
    count: int,
    *,
    now: datetime | None = None,
    seed: int = 7,
    progress: Callable[[str], None] = print,
) -> Filled:
    """Write ``count`` requests of history ending at ``now``; ``Journal.prepare`` indexes them after."""
    policy = DeadlinePolicy()
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    pool = templates(policy)
    people = max(1, count * 6 // 10)
    span = timedelta(days=max(30.0, count / PER_DAY))
    start = now - span - timedelta(hours=1)
    step = span / max(1, count)
    started = time.perf_counter()
    filled = Filled()
    persons = [_person(i, rng, start) for i in range(people)]
    last_seen: dict[str, tuple[datetime, str, str, str, dict[str, Any] | None]] = {}
    contacts = [{k: v for k, v in p.items() if k == "_id" or not k.startswith("_")} for p in persons]
    for offset in range(0, len(contacts), BATCH):
        await journal.contacts.insert_many(contacts[offset : offset + BATCH], ordered=False)
    filled.contacts = len(contacts)
    seqs: dict[int, int] = {}
    requests: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []

    async def flush() -> None:
        await asyncio.gather(
            journal.requests.insert_many(requests, ordered=False),
            journal.messages.insert_many(messages, ordered=False),
            journal.audit.insert_many(audit, ordered=False),
        )
        filled.requests += len(requests)
        filled.messages += len(messages)
        filled.audit += len(audit)
        requests.clear()
        messages.clear()
        audit.clear()

    for i in range(count):
        at = start + step * i
        year = registration_year(at, policy.tz)
        seqs[year] = seqs.get(year, 0) + 1
        number = format_number(year, seqs[year])
        person = persons[rng.randrange(people)]
        template = pool[rng.randrange(len(pool))]
        street, house, flat = rng.choice(STREETS), str(rng.randint(1, 120)), str(rng.randint(1, 300))
        address = Address(street=street, street_type="ул.", house=house, flat=flat)
        conversation_id = person["identities"][0]
        message_id = f"{conversation_id}:h{i}"
        text = f"{template.text}, {street} {house} кв {flat}"
        closed = at < now - timedelta(days=OPEN_DAYS) or rng.random() < 0.3
        request = _copy(template.request)
        request.update(
            {
                "_id": number,
                "number": number,
                "year": year,
                "seq": seqs[year],
                "source_message_id": message_id,
                "message_ids": [message_id],
                "registered_at": at,
                "received_at": at,
                "channel": person["_channel"],
                "conversation_id": conversation_id,
                "contact_id": person["_id"],
                "contact": {
                    "name": person["name"],
                    "phone": next(iter(person["phones"]), None),
                    "email": next(iter(person["emails"]), None),
                },
                "address": {
                    "street": street,
                    "street_type": "ул.",
                    "house": house,
                    "building": None,
                    "structure": None,
                    "entrance": None,
                    "floor": None,
                    "flat": flat,
                    "text": address.text(),
                    "key": building_key(address),
                },
                "text": text,
                "updated_at": at,
            }
        )
        clocks = request.get("clocks") or {}
        late = closed and rng.random() < LATE_SHARE
        for name, clock in clocks.items():
            clock["due_at"] = at + template.clock_offsets[name]
            if closed:
                clock.update({"done_at": at + template.clock_offsets[name] / 2, "met": True, "by": "dispatcher"})
            if late:
                clock.update({"done_at": clock["due_at"] + timedelta(minutes=20), "met": False})
                request["breached"], late = True, False
        if closed:
            closed_at = at + timedelta(hours=rng.uniform(0.5, 30))
            request.update(
                {
                    "status": "done",
                    "next_due_at": None,
                    "closed_at": closed_at,
                    "updated_at": closed_at,
                    "result": {"text": "Выполнено: устранено на месте", "by": "dispatcher", "at": closed_at},
                }
            )
        else:
            request["status"] = rng.choice(["registered", "accepted", "in_work"])
            for clock in clocks.values():
                if clock["due_at"] <= now:
                    clock.update({"breached_at": clock["due_at"], "met": False})
                    request["breached"] = True
            due = [c["due_at"] for c in clocks.values() if c["due_at"] > now]
            request["next_due_at"] = min(due) if due else None
        requests.append(request)
        inbound = _copy(template.inbound)
        inbound.update(
            {
                "_id": message_id,
                "channel": person["_channel"],
                "address": person["_address"],
                "conversation_id": conversation_id,
                "contact_id": person["_id"],
                "sender": {"id": person["_address"], "name": person["name"], "phone": None, "email": None},
                "text": text,
                "at": at,
                "request_number": number,
                "review": {"due_at": at + timedelta(minutes=10), "done_at": at + timedelta(minutes=3), "by": "disp"},
            }
        )
        reply = _copy(template.reply)
        reply.update(
            {
                "_id": f"{message_id}#reply",
                "channel": person["_channel"],
                "address": person["_address"],
                "conversation_id": conversation_id,
                "contact_id": person["_id"],
                "request_number": number,
                "in_reply_to": message_id,
                "at": at + timedelta(milliseconds=400),
                "text": str(reply["text"]).replace("2026-000000", number),
            }
        )
        reply["delivery"] = {"status": "sent", "attempts": 1, "error": None, "sent_at": reply["at"]}
        messages.extend((inbound, reply))
        audit.append(
            {
                "_id": f"{message_id}#registered",
                "request": number,
                "at": at,
                "actor": "hub",
                "action": "registered",
                "changes": {"category": request["category"]},
                "source": "router",
                "message_id": message_id,
            }
        )
        if closed:
            audit.append(
                {
                    "_id": f"{number}#closed",
                    "request": number,
                    "at": request["closed_at"],
                    "actor": "dispatcher",
                    "action": "status",
                    "changes": {"status": ["registered", "done"]},
                    "source": "inbox",
                    "message_id": None,
                }
            )
        last_seen[conversation_id] = (at, person["_id"], number, text, None if closed else request)
        if len(requests) >= BATCH:
            await flush()
            if filled.requests % 100_000 == 0:
                progress(f"  {filled.requests:,} requests in {time.perf_counter() - started:.0f} s")
    if requests:
        await flush()
    conversations = []
    for person in persons:
        conversation_id = person["identities"][0]
        seen = last_seen.get(conversation_id)
        if seen is None:
            continue
        at, contact_id, number, text, still_open = seen
        conversations.append(
            {
                "_id": conversation_id,
                "channel": person["_channel"],
                "address": person["_address"],
                "contact_id": contact_id,
                "created_at": start,
                "state": None,
                "active_request": number if still_open else None,
                "last_request": number,
                "unread": 0,
                "messages": 2,
                "emergency": bool(still_open and still_open.get("emergency")),
                "category": still_open.get("category") if still_open else None,
                "waiting_since": None,
                "last_message_at": at,
                "last_inbound_at": at,
                "title": person["name"],
                "preview": text[:200],
            }
        )
    for offset in range(0, len(conversations), BATCH):
        await journal.conversations.insert_many(conversations[offset : offset + BATCH], ordered=False)
    for year, seq in seqs.items():
        await journal.counters.update_one({"_id": f"requests:{year}"}, {"$max": {"seq": seq}}, upsert=True)
    filled.counters = seqs
    filled.seconds = time.perf_counter() - started
    return filled


DATABASE = "bench_hub"
OPEN_SECONDS = 900.0
"""How long the embedded server may take to open a journal of a million requests (minutes, not seconds)."""


async def fill_directory(directory: Path, count: int) -> None:
    """Fill ``directory`` once (data, then the journal's indexes over it: several times faster than
    inserting into the indexes); a directory already filled with ``count`` is left as it is."""
    written, indexed = directory / "written", directory / "filled"
    done = f"{count} {index_signature()}"
    if indexed.exists() and indexed.read_text().strip() == done:
        return
    database = EmbeddedDatabase("127.0.0.1", free_port(), directory / "db", cache_size="1G")
    database.start(timeout=OPEN_SECONDS)
    try:
        journal = Journal.connect(database.url + "?retryWrites=false", DATABASE)
        if not (written.exists() and written.read_text().strip() == str(count)):
            filled = await fill(journal, count)
            written.write_text(str(count))
            print(
                f"journal written: {filled.requests:,} requests, {filled.contacts:,} residents, "
                f"{filled.messages:,} messages, {filled.audit:,} audit entries in {filled.seconds:.0f} s"
            )
        started = time.perf_counter()
        await journal.prepare()
        print(f"journal indexed in {time.perf_counter() - started:.0f} s")
        await journal.close()
    finally:
        database.stop()
    indexed.write_text(done)


def index_signature() -> str:
    """Which version of the journal's indexes a history carries: one added since it was generated is built
    once over the history here, not in every copy a bench run registers into."""
    return hashlib.sha1(inspect.getsource(Journal._create_indexes).encode()).hexdigest()[:12]


if __name__ == "__main__":
    asyncio.run(fill_directory(Path(sys.argv[2]), int(sys.argv[1])))
