"""The journal's lists over a long history: pages by key, the breached flag, the open conversations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bots.dialogue import CLOSED_STATUSES
from bots.texts import STATUS_NAMES
from inbox.board import Board
from journal.desk import Desk, JournalFilters, JournalKey
from journal.documents import OPEN_STATUSES
from journal.repository import Journal

ZONE = ZoneInfo("Europe/Moscow")
NOW = datetime.now(UTC).replace(microsecond=0)


def request(n: int, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "_id": f"2026-{n:06d}",
        "source_message_id": f"webchat:pages:{n}",
        "registered_at": at,
        "category": "sewer_clog" if n % 3 else "lift",
        "channel": "telegram" if n % 2 else "webchat",
        "status": "done",
        "clocks": {},
        "address": {"text": f"ул. Ленина, д. {n}", "key": f"ленина|{n}"},
        **fields,
    }


async def history(journal: Journal) -> list[dict[str, Any]]:
    """130 requests over five years: most an hour apart, ten registered at one moment, a few years old."""
    docs = [request(n, NOW - timedelta(hours=n)) for n in range(1, 111)]
    tied = NOW - timedelta(hours=30, minutes=30)
    docs += [request(n, tied) for n in range(111, 121)]
    docs += [request(n, NOW - timedelta(days=300 * (n - 120))) for n in range(121, 131)]
    await journal.requests.insert_many([dict(d) for d in docs])
    return sorted(docs, key=lambda d: (d["registered_at"], d["_id"]), reverse=True)


async def all_pages(desk: Desk, filters: JournalFilters, size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    at: JournalKey | None = None
    while True:
        page = await desk.journal_page(filters, ZONE, at, size)
        pages.append([d["_id"] for d in page.requests])
        if page.older is None:
            return pages
        at = JournalKey.parse(page.older.token)


async def test_pages_by_key_list_every_request_once_newest_first_and_lead_back(journal: Journal) -> None:
    expected = [d["_id"] for d in await history(journal)]
    desk = Desk(journal)
    pages = await all_pages(desk, JournalFilters(), 25)
    assert [n for p in pages for n in p] == expected
    assert [len(p) for p in pages] == [25, 25, 25, 25, 25, 5]

    first = await desk.journal_page(JournalFilters(), ZONE, None, 25)
    assert first.newer is None
    second = await desk.journal_page(JournalFilters(), ZONE, first.older, 25)
    assert [d["_id"] for d in second.requests] == pages[1]
    assert second.newer is not None
    back = await desk.journal_page(JournalFilters(), ZONE, JournalKey.parse(second.newer.token), 25, newer=True)
    assert [d["_id"] for d in back.requests] == pages[0]
    assert back.newer is None and back.older is not None


async def test_pages_keep_to_filters_and_periods(journal: Journal) -> None:
    docs = await history(journal)
    desk = Desk(journal)
    lifts = [d["_id"] for d in docs if d["category"] == "lift"]
    pages = await all_pages(desk, JournalFilters({"category": "lift"}), 7)
    assert [n for p in pages for n in p] == lifts
    both = {"category": "lift", "channel": "telegram"}
    expected = [d["_id"] for d in docs if d["category"] == "lift" and d["channel"] == "telegram"]
    pages = await all_pages(desk, JournalFilters(both), 4)
    assert [n for p in pages for n in p] == expected and expected
    day = (NOW - timedelta(hours=40)).astimezone(ZONE).date()
    period = {"from": day.isoformat(), "to": day.isoformat()}
    within = [d["_id"] for d in docs if d["registered_at"].astimezone(ZONE).date() == day]
    pages = await all_pages(desk, JournalFilters(period), 10)
    assert [n for p in pages for n in p] == within and within
    building = await desk.journal_page(JournalFilters({"address": "Ленина 115"}), ZONE, None, 10)
    assert [d["_id"] for d in building.requests] == ["2026-000115"]
    house = await desk.journal_page(JournalFilters({"address": "ул. Ленина, д. 11"}), ZONE, None, 10)
    assert [d["_id"] for d in house.requests] == ["2026-000011"], "house 11 is not 110-119"
    exported = [
        r["_id"]
        async for batch in desk.export_batches(JournalFilters({"address": "Ленина 11"}), ZONE)
        for r, _ in batch
    ]
    assert exported == ["2026-000011"]
    street = await all_pages(desk, JournalFilters({"address": "Ленина"}), 40)
    assert [n for p in street for n in p] == [d["_id"] for d in docs]


async def test_a_key_made_up_by_hand_is_ignored_not_an_error() -> None:
    for token in ("", "abc", "1~", "~2026-000001", "9" * 40 + "~x", "12~" + "x" * 100, "12~a\nb"):
        assert JournalKey.parse(token) is None
    key = JournalKey.parse("1764612345678~2026-000001")
    assert key is not None and key.token == "1764612345678~2026-000001"


async def test_a_missed_clock_flags_the_request_for_the_breached_filter(journal: Journal) -> None:
    desk = Desk(journal)
    due = NOW - timedelta(minutes=5)
    clocks = {"inform": {"label": "Сообщить", "due_at": due, "done_at": None, "met": None}}
    await journal.requests.insert_many(
        [request(1, NOW, status="registered", clocks=clocks), request(2, NOW - timedelta(hours=1), clocks=clocks)]
    )
    assert await desk.complete_clock("2026-000001", "inform", "anna", NOW)
    assert await desk.complete_clock("2026-000002", "inform", "anna", due - timedelta(minutes=1))
    page = await desk.journal_page(JournalFilters({"breached": "1"}), ZONE, None, 50)
    assert [d["_id"] for d in page.requests] == ["2026-000001"]


async def test_requests_missed_before_the_flag_existed_are_flagged_once(journal: Journal) -> None:
    late = {"inform": {"due_at": NOW, "done_at": NOW + timedelta(minutes=3), "met": False}}
    await journal.requests.insert_one(request(7, NOW, clocks=late))
    await journal.requests.insert_one(request(8, NOW, clocks={"inform": {"due_at": NOW, "met": True}}))
    await journal.counters.delete_one({"_id": "migration:breached"})
    await journal.prepare()
    flagged = [d["_id"] async for d in journal.requests.find({"breached": True})]
    assert flagged == ["2026-000007"]


async def test_open_conversations_are_listed_however_old_their_last_message(journal: Journal) -> None:
    years_ago = NOW - timedelta(days=800)
    await journal.conversations.insert_many(
        [
            {"_id": "telegram:old-open", "active_request": "2026-000001", "last_message_at": years_ago},
            {"_id": "vk:old-waiting", "active_request": None, "waiting_since": years_ago, "last_message_at": years_ago},
            {"_id": "webchat:old-done", "active_request": None, "waiting_since": None, "last_message_at": years_ago},
            *(
                {"_id": f"webchat:recent-{n}", "active_request": None, "last_message_at": NOW - timedelta(minutes=n)}
                for n in range(5)
            ),
        ]
    )
    listed = {c["_id"] for c in await Desk(journal).inbox_conversations(recent=3)}
    assert listed == {"telegram:old-open", "vk:old-waiting", "webchat:recent-0", "webchat:recent-1", "webchat:recent-2"}


async def test_a_board_read_on_an_empty_journal_sees_the_first_conversation_without_an_event(journal: Journal) -> None:
    board = Board(Desk(journal))
    assert (await board.snapshot()).conversations == {}
    await journal.conversations.insert_one(
        {"_id": "webchat:first", "active_request": None, "waiting_since": NOW, "last_message_at": datetime.now(UTC)}
    )
    assert set((await board.snapshot()).conversations) == {"webchat:first"}


def test_open_statuses_are_every_status_but_the_closed_ones() -> None:
    assert set(OPEN_STATUSES) == set(STATUS_NAMES) - set(CLOSED_STATUSES)


async def test_the_inbox_board_reads_what_changed_and_nothing_else(journal: Journal) -> None:
    await journal.requests.insert_many(
        [request(1, NOW, status="registered", conversation_id="telegram:1"), request(2, NOW, status="registered")]
    )
    await journal.conversations.insert_many(
        [
            {"_id": "telegram:1", "active_request": "2026-000001", "contact_id": "c1", "last_message_at": NOW},
            {"_id": "vk:2", "active_request": "2026-000002", "last_message_at": NOW - timedelta(minutes=1)},
        ]
    )
    await journal.contacts.insert_one({"_id": "c1", "name": "Иванова Анна", "identities": ["telegram:1"]})
    board = Board(Desk(journal), recent=1)
    first = await board.snapshot()
    assert set(first.conversations) == {"telegram:1", "vk:2"} and first.contacts["c1"]["name"] == "Иванова Анна"

    await journal.requests.update_one({"_id": "2026-000001"}, {"$set": {"status": "accepted"}})
    await journal.requests.update_one({"_id": "2026-000002"}, {"$set": {"status": "accepted"}})
    board.changed(request_number="2026-000001")
    seen = await board.snapshot()
    assert seen.requests["2026-000001"]["status"] == "accepted"
    assert seen.requests["2026-000002"]["status"] == "registered", "what no event named waits for the reload"

    later = NOW + timedelta(seconds=5)
    await journal.conversations.insert_one({"_id": "webchat:3", "active_request": None, "last_message_at": later})
    await journal.conversations.update_one({"_id": "vk:2"}, {"$set": {"active_request": None}})
    board.changed(conversation_id="vk:2")
    seen = await board.snapshot()
    assert set(seen.conversations) == {"telegram:1", "webchat:3"}, "a new message shows without an event"
    assert set(seen.requests) == {"2026-000001"}
    board.noted({"type": "person.updated", "data": {"contact": "c1"}})
    await journal.contacts.update_one({"_id": "c1"}, {"$set": {"name": "Петрова Анна"}})
    assert (await board.snapshot()).contacts["c1"]["name"] == "Петрова Анна"


async def test_the_board_completes_inform_clocks_from_deliveries_when_a_delivery_names_the_conversation(
    journal: Journal,
) -> None:
    inform = {"due_at": NOW + timedelta(minutes=30), "done_at": None, "met": None}
    await journal.requests.insert_one(
        request(7, NOW, status="registered", conversation_id="vk:7", clocks={"inform": inform})
    )
    await journal.conversations.insert_many(
        [
            {"_id": "vk:7", "active_request": "2026-000007", "last_message_at": NOW},
            {"_id": "webchat:8", "active_request": None, "last_message_at": NOW + timedelta(minutes=1)},
        ]
    )
    board = Board(Desk(journal), inform_recheck=3600.0)
    assert (await board.snapshot()).requests["2026-000007"]["clocks"]["inform"]["done_at"] is None
    await journal.deliveries.insert_one(
        {"_id": "vk:7:1#reply", "status": "sent", "at": NOW + timedelta(seconds=2), "request_number": "2026-000007"}
    )
    assert (await board.snapshot()).requests["2026-000007"]["clocks"]["inform"]["done_at"] is None, (
        "between rechecks only what an event names is looked at"
    )
    board.noted({"type": "delivery", "data": {"channel": "vk", "conversations": ["vk:7"], "failed": 0}})
    clock = (await board.snapshot()).requests["2026-000007"]["clocks"]["inform"]
    assert clock["done_at"] is not None and clock["met"] is True and clock["by"] == "hub"


async def test_a_building_pages_through_the_house_and_its_blocks_in_time_order(journal: Journal) -> None:
    keys = ["ленина|5", "ленина|5|2", "ленина|50", "ленина|5", "ленина|5|2", "ленина|55", "ленина|5"]
    docs = [
        request(n, NOW - timedelta(hours=n), address={"text": key, "key": key}) for n, key in enumerate(keys, start=1)
    ]
    await journal.requests.insert_many([dict(d) for d in docs])
    desk = Desk(journal)
    expected = [d["_id"] for d in docs if d["address"]["key"] in ("ленина|5", "ленина|5|2")]
    pages = await all_pages(desk, JournalFilters({"address": "Ленина 5"}), 2)
    assert [n for p in pages for n in p] == expected and [len(p) for p in pages] == [2, 2, 1]
    first = await desk.journal_page(JournalFilters({"address": "Ленина 5"}), ZONE, None, 2)
    second = await desk.journal_page(JournalFilters({"address": "Ленина 5"}), ZONE, first.older, 2)
    assert second.newer is not None
    back = await desk.journal_page(
        JournalFilters({"address": "Ленина 5"}), ZONE, JournalKey.parse(second.newer.token), 2, newer=True
    )
    assert [d["_id"] for d in back.requests] == [d["_id"] for d in first.requests]
