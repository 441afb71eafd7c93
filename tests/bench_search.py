"""Search over a journal of many requests on the embedded database: ``python -m tests.bench_search [N]``.

Seeds N requests (default 100,000) and their residents into a fresh SecantusDB with the journal's own
indexes, builds the search index the way an inbox process does on its first search, then times what
dispatchers type — a number, a phone in two spellings, an address, a surname, words of the text, a common
word — each answer including the journal's refresh and the fetch of the shown requests. Prints p50, p95 and
the slowest per kind of query, and the time to build the index.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.embedded import EmbeddedDatabase, free_port
from journal.repository import Journal
from journal.search import SearchIndex

STREETS = [
    "Ленина",
    "Гагарина",
    "Мира",
    "Садовая",
    "Кирова",
    "Советская",
    "Лесная",
    "Молодёжная",
    "Пушкина",
    "Чехова",
    "Гоголя",
    "Школьная",
    "Набережная",
    "Победы",
    "Строителей",
    "Комсомольская",
]
SURNAMES = [
    "Иванов",
    "Петров",
    "Сидоров",
    "Смирнов",
    "Кузнецов",
    "Попов",
    "Васильев",
    "Соколов",
    "Михайлов",
    "Новиков",
    "Фёдоров",
    "Морозов",
    "Волков",
    "Алексеев",
    "Лебедев",
    "Семёнов",
    "Егоров",
    "Павлов",
]
NAMES = ["Иван", "Мария", "Анна", "Сергей", "Ольга", "Дмитрий", "Елена", "Николай", "Татьяна", "Алексей"]
TEXTS = [
    "прорвало трубу в ванной, вода хлещет на пол",
    "течёт батарея в комнате, под ней лужа",
    "не работает лифт во втором подъезде",
    "засор канализации, вода не уходит у соседей тоже",
    "нет горячей воды с утра",
    "в подъезде пахнет газом",
    "застряли в лифте между этажами",
    "не горит свет на лестничной площадке",
    "мусоропровод забит, мешки на площадке",
    "с потолка капает после дождя, последний этаж",
    "когда будет перерасчёт за отопление",
    "искрит щиток на этаже, запах гари",
]


def phone(rng: random.Random) -> str:
    return "+79" + "".join(rng.choice("0123456789") for _ in range(9))


async def seed(journal: Journal, count: int, rng: random.Random) -> list[dict[str, object]]:
    people = max(1, count * 6 // 10)
    start = datetime.now(UTC) - timedelta(minutes=5 * count + 60)
    contacts = []
    for i in range(people):
        contacts.append(
            {
                "_id": f"c{i:07d}",
                "name": f"{rng.choice(SURNAMES)} {rng.choice(NAMES)}" if rng.random() < 0.6 else None,
                "phones": [phone(rng)] if rng.random() < 0.8 else [],
                "emails": [],
                "identities": [f"bench:{i}"],
                "created_at": start,
                "updated_at": start,
            }
        )
    for offset in range(0, len(contacts), 2000):
        await journal.contacts.insert_many(contacts[offset : offset + 2000])
    batch: list[dict[str, object]] = []
    shown: list[dict[str, object]] = []
    for i in range(count):
        contact = contacts[rng.randrange(people)]
        street, house, flat = rng.choice(STREETS), str(rng.randint(1, 80)), str(rng.randint(1, 300))
        at = start + timedelta(minutes=5 * i)
        doc = {
            "_id": f"2026-{i + 1:06d}",
            "source_message_id": f"bench:{i}",
            "registered_at": at,
            "updated_at": at,
            "contact_id": contact["_id"],
            "contact": {"name": contact["name"], "phone": (contact["phones"] or [None])[0], "email": None},
            "address": {
                "street": street,
                "house": house,
                "flat": flat,
                "key": f"{street.lower().replace('ё', 'е')}|{house}",
                "text": f"ул. {street}, д. {house}, кв. {flat}",
            },
            "text": f"{rng.choice(TEXTS)}, {street} {house} кв {flat}",
            "category": "water_accident",
            "status": "registered",
            "clocks": {},
        }
        batch.append(doc)
        if i % 997 == 0:
            shown.append(doc)
        if len(batch) == 2000:
            await journal.requests.insert_many(batch)
            batch = []
    if batch:
        await journal.requests.insert_many(batch)
    return shown


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main(count: int) -> None:
    storage = Path(tempfile.mkdtemp(prefix="adshub-bench-search-"))
    database = EmbeddedDatabase("127.0.0.1", free_port(), storage / "db", cache_size="512M")
    database.start()
    try:
        journal = Journal.connect(database.url, "bench_search")
        await journal.prepare()
        rng = random.Random(7)
        started = time.perf_counter()
        samples = await seed(journal, count, rng)
        print(f"seeded {count:,} requests in {time.perf_counter() - started:.0f} s")
        index = SearchIndex(journal)
        started = time.perf_counter()
        await index.refresh()
        print(f"index built from the journal in {time.perf_counter() - started:.1f} s (first search of a process)")
        kinds: dict[str, list[str]] = {
            "number": [],
            "sequence": [],
            "phone +7": [],
            "phone 8": [],
            "phone 7 digits": [],
            "address": [],
            "surname": [],
            "words": [],
            "common word": [],
        }
        for doc in samples[:60]:
            contact = doc["contact"]
            assert isinstance(contact, dict)
            address = doc["address"]
            assert isinstance(address, dict)
            kinds["number"].append(str(doc["_id"]))
            kinds["sequence"].append(str(int(str(doc["_id"]).split("-")[1])))
            if contact.get("phone"):
                digits = str(contact["phone"])
                kinds["phone +7"].append(f"+7 ({digits[2:5]}) {digits[5:8]}-{digits[8:10]}-{digits[10:]}")
                kinds["phone 8"].append("8" + digits[2:])
                kinds["phone 7 digits"].append(f"{digits[5:8]}-{digits[8:10]}-{digits[10:]}")
            kinds["address"].append(f"{address['street']} {address['house']}")
            if contact.get("name"):
                kinds["surname"].append(str(contact["name"]).split()[0])
            kinds["words"].append(" ".join(str(doc["text"]).split()[:2]))
            kinds["common word"].append(rng.choice(["течёт", "лифт", "вода", "подъезд"]))
        print(f"{'query':<16} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'found':>8}")
        everything: list[float] = []
        for kind, queries in kinds.items():
            times, found = [], []
            for query in queries:
                t = time.perf_counter()
                result = await index.search(query)
                times.append((time.perf_counter() - t) * 1000)
                found.append(result.total)
            everything.extend(times)
            print(
                f"{kind:<16} {len(times):>4} {statistics.median(times):>8.1f} {percentile(times, 0.95):>8.1f} "
                f"{max(times):>8.1f} {statistics.median(found):>8.0f}"
            )
        print(
            f"{'all':<16} {len(everything):>4} {statistics.median(everything):>8.1f} "
            f"{percentile(everything, 0.95):>8.1f} {max(everything):>8.1f}"
        )
        await journal.close()
    finally:
        database.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
