"""Executors' working time as pure functions: the weekly pattern, leave and extra shifts, free slots."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.schedule import (
    Absence,
    cells,
    fits,
    free_slots,
    hours_text,
    parse_hours,
    slot_length,
    span_text,
    trades_for,
)
from inbox.calendar import ics_feed

MSK = ZoneInfo("Europe/Moscow")
WEEK = parse_hours("пн-пт 8:00-17:00; сб 9:00-13:00")
MONDAY = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)  # 09:00 in Moscow


def test_the_weekly_pattern_as_dispatchers_write_it() -> None:
    assert WEEK[0] == [(time(8), time(17))] and WEEK[5] == [(time(9), time(13))] and 6 not in WEEK
    assert (
        hours_text(WEEK)
        == "пн 08:00-17:00; вт 08:00-17:00; ср 08:00-17:00; чт 08:00-17:00; пт 08:00-17:00; сб 09:00-13:00"
    )
    assert parse_hours("сб-вс 0:00-24:00")[6] == [(time(0), time(23, 59))]
    night = free_slots(parse_hours("пн 22:00-24:00"), [], [], MONDAY, timedelta(hours=2), MSK, limit=1)
    assert night[0].astimezone(MSK).strftime("%a %H:%M") == "Mon 22:00"
    assert set(parse_hours("пт-пн 20:00-23:00")) == {4, 5, 6, 0}
    for nonsense in ("всегда", "пн 17:00-08:00", "пн 25:00-26:00"):
        with pytest.raises(ValueError):
            parse_hours(nonsense)


def test_free_slots_skip_the_booked_cells_and_leave_days() -> None:
    length = timedelta(hours=1)
    first = free_slots(WEEK, [], [], MONDAY, length, MSK, limit=3)
    assert [s.astimezone(MSK).strftime("%a %H:%M") for s in first] == ["Mon 09:00", "Mon 10:00", "Mon 11:00"]
    busy = cells(first[0], timedelta(hours=2))
    after_booking = free_slots(WEEK, [], busy, MONDAY, length, MSK, limit=1)
    assert after_booking[0].astimezone(MSK).strftime("%H:%M") == "11:00"
    leave = [Absence(date(2026, 12, 7), date(2026, 12, 11), "leave")]
    assert free_slots(WEEK, leave, [], MONDAY, length, MSK, limit=1)[0].astimezone(MSK).date() == date(2026, 12, 12)
    extra = [Absence(date(2026, 12, 13), date(2026, 12, 13), "shift", ((time(10), time(12)),))]
    sunday = datetime(2026, 12, 13, 5, 0, tzinfo=UTC)
    shift = free_slots(WEEK, extra, [], sunday, length, MSK, limit=3)
    assert [s.astimezone(MSK).strftime("%d %H:%M") for s in shift] == ["13 10:00", "13 11:00", "14 08:00"]


def test_a_slot_late_in_the_day_must_fit_before_the_end_of_work() -> None:
    late = datetime(2026, 12, 7, 13, 40, tzinfo=UTC)  # 16:40 Moscow, an hour's job does not fit before 17:00
    slot = free_slots(WEEK, [], [], late, timedelta(hours=1), MSK, limit=1)[0]
    assert slot.astimezone(MSK).strftime("%d %H:%M") == "08 08:00"
    assert not fits(WEEK, [], datetime(2026, 12, 7, 13, 30, tzinfo=UTC), timedelta(hours=1), MSK)
    assert fits(WEEK, [], datetime(2026, 12, 7, 13, 0, tzinfo=UTC), timedelta(hours=1), MSK)


def test_categories_name_their_trades_and_lengths() -> None:
    assert trades_for("sewer_clog") == ("plumber",) and trades_for("consultation") == ()
    assert slot_length("water_accident") == timedelta(hours=2) and slot_length("minor_repair") == timedelta(hours=1)
    assert len(cells(MONDAY, timedelta(minutes=90))) == 3


def test_the_icalendar_feed_folds_long_lines_and_escapes() -> None:
    booking = {
        "_id": "b1",
        "request_number": "2026-000042",
        "start": MONDAY,
        "end": MONDAY + timedelta(hours=1),
        "reason": "Засор; канализации, " + "очень длинная причина " * 5,
        "status": "booked",
    }
    feed = ics_feed({"_id": "s", "name": "Иванов Иван"}, [booking], {}, "УК «Дом»")  # type: ignore[list-item,typeddict-item]
    assert feed.startswith("BEGIN:VCALENDAR\r\n") and feed.endswith("END:VCALENDAR\r\n")
    assert "DTSTART:20261207T060000Z" in feed and "Засор\\; канализации\\," in feed.replace("\r\n ", "")
    assert all(len(line.encode()) <= 75 for line in feed.split("\r\n"))


def test_a_span_to_midnight_ends_at_24_and_a_whole_day_is_round_the_clock() -> None:
    day = datetime(2026, 12, 7, tzinfo=MSK)
    assert span_text(day.replace(hour=8), day.replace(hour=17), MSK) == "08:00–17:00"
    assert span_text(day.replace(hour=20), day + timedelta(days=1), MSK) == "20:00–24:00"
    assert span_text(day, day + timedelta(days=1), MSK) == "круглосуточно"
