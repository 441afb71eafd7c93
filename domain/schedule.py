"""Executors' working time and free slots: pure functions of a weekly pattern, its exceptions (leave, sick
days, extra shifts) and the bookings already made.

Time is cut into 30-minute cells; a booking occupies the cells it covers, and the journal keeps one unique
record per executor and cell, which is what refuses a second booking of the same time (two dispatchers
at once get one success and one refusal). Working hours are local to the company's zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from domain.categories import Category

CELL = timedelta(minutes=30)

TRADES: dict[str, str] = {
    "plumber": "Сантехник",
    "electrician": "Электрик",
    "lift": "Лифтёр",
    "roofer": "Кровельщик",
    "handyman": "Мастер по ремонту",
    "gas": "Газовая служба",
    "cleaner": "Уборка и вывоз",
}

CATEGORY_TRADES: dict[Category, tuple[str, ...]] = {
    Category.WATER_ACCIDENT: ("plumber",),
    Category.HEATING_ACCIDENT: ("plumber",),
    Category.SEWER_ACCIDENT: ("plumber",),
    Category.SEWER_CLOG: ("plumber",),
    Category.ELECTRICITY_ACCIDENT: ("electrician",),
    Category.GAS_SMELL: ("gas",),
    Category.ELEVATOR_TRAPPED: ("lift",),
    Category.ELEVATOR_FAULT: ("lift",),
    Category.UTILITY_OUTAGE: ("plumber", "electrician"),
    Category.GARBAGE_CHUTE_CLOG: ("cleaner",),
    Category.SANITATION: ("cleaner",),
    Category.ROOF_LEAK: ("roofer", "handyman"),
    Category.MINOR_REPAIR: ("handyman", "plumber", "electrician"),
    Category.PAID_SERVICE: ("handyman", "plumber", "electrician"),
}
"""Who can be sent to each category; a category not named here (consultation, other) books anyone."""

SLOT_LENGTH: dict[Category, timedelta] = {
    Category.WATER_ACCIDENT: timedelta(hours=2),
    Category.HEATING_ACCIDENT: timedelta(hours=2),
    Category.SEWER_ACCIDENT: timedelta(hours=2),
    Category.ELECTRICITY_ACCIDENT: timedelta(hours=1, minutes=30),
    Category.ELEVATOR_FAULT: timedelta(hours=2),
    Category.ROOF_LEAK: timedelta(hours=2),
    Category.PAID_SERVICE: timedelta(hours=2),
}
"""How long an assignment holds an executor; the rest take an hour."""

DAY_NAMES = ("пн", "вт", "ср", "чт", "пт", "сб", "вс")
EXCEPTION_KINDS = {"leave": "отпуск", "sick": "больничный", "off": "выходной", "shift": "дополнительная смена"}

CREW_STEPS: dict[str, tuple[str, str | None]] = {
    "accepted": ("Принял", "accepted"),
    "on_way": ("Выехал", "in_work"),
    "on_site": ("На месте", "in_work"),
    "localized": ("Локализовано", "localized"),
    "done": ("Выполнено", "done"),
}
"""The crew app's buttons: what the executor reports and the request status it moves to."""


def crew_buttons(number: str, done: Iterable[str] = ()) -> list[list[tuple[str, str]]]:
    """The steps an executor has not reported yet, as messenger buttons (``crew:<step>:<number>``), three a row."""
    finished = set(done)
    row = [(label, f"crew:{step}:{number}") for step, (label, _) in CREW_STEPS.items() if step not in finished]
    return [row[i : i + 3] for i in range(0, len(row), 3)]


Hours = dict[int, list[tuple[time, time]]]
"""Working intervals by weekday (0 is Monday)."""

_HOURS = re.compile(r"(\d{1,2})[:.](\d{2})\s*[-–—]\s*(\d{1,2})[:.](\d{2})")
_DAYS = re.compile(r"(пн|вт|ср|чт|пт|сб|вс)(?:\s*[-–—]\s*(пн|вт|ср|чт|пт|сб|вс))?", re.IGNORECASE)


def slot_length(category: str) -> timedelta:
    try:
        return SLOT_LENGTH.get(Category(category), timedelta(hours=1))
    except ValueError:
        return timedelta(hours=1)


def trades_for(category: str) -> tuple[str, ...]:
    try:
        return CATEGORY_TRADES.get(Category(category), ())
    except ValueError:
        return ()


def _interval(match: re.Match[str]) -> tuple[time, time]:
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if not (h1 < 24 and h2 <= 24 and m1 < 60 and m2 < 60):
        raise ValueError(f"нет такого времени: {match.group(0)}")
    end = time(23, 59) if h2 == 24 else time(h2, m2)
    if end <= time(h1, m1):
        raise ValueError(f"смена кончается раньше, чем начинается: {match.group(0)}")
    return time(h1, m1), end


def parse_hours(text: str) -> Hours:
    """«пн-пт 8:00-17:00; сб 9:00-13:00» → working intervals by weekday. Raises ValueError on nonsense."""
    hours: Hours = {}
    for chunk in re.split(r"[;\n]", text):
        chunk = chunk.strip()
        if not chunk:
            continue
        days_match = list(_DAYS.finditer(chunk))
        intervals = [_interval(m) for m in _HOURS.finditer(chunk)]
        if not days_match or not intervals:
            raise ValueError(f"не понятно: «{chunk}» — пишите как «пн-пт 8:00-17:00»")
        for m in days_match:
            first = DAY_NAMES.index(m.group(1).lower())
            last = DAY_NAMES.index(m.group(2).lower()) if m.group(2) else first
            for day in range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]:
                hours.setdefault(day, []).extend(intervals)
    return {d: sorted(set(v)) for d, v in sorted(hours.items())}


def hours_text(hours: Mapping[int, Sequence[tuple[time, time]]]) -> str:
    """The pattern as dispatchers write it, for the staff page."""
    parts = []
    for day in sorted(hours):
        spans = ", ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in hours[day])
        parts.append(f"{DAY_NAMES[day]} {spans}")
    return "; ".join(parts)


def hours_doc(hours: Hours) -> dict[str, list[list[str]]]:
    return {str(d): [[f"{a:%H:%M}", f"{b:%H:%M}"] for a, b in spans] for d, spans in hours.items()}


def hours_of(doc: Mapping[str, Sequence[Sequence[str]]] | None) -> Hours:
    result: Hours = {}
    for day, spans in (doc or {}).items():
        result[int(day)] = [(time.fromisoformat(a), time.fromisoformat(b)) for a, b in spans]
    return result


@dataclass(frozen=True)
class Absence:
    """A day range an executor is away (leave, sick, off), or works other hours (``shift``)."""

    first: date
    last: date
    kind: str
    hours: tuple[tuple[time, time], ...] = ()


def working_spans(
    hours: Hours, absences: Iterable[Absence], day: date, zone: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    """When an executor works on ``day``, as aware datetimes."""
    spans = list(hours.get(day.weekday(), []))
    for absence in absences:
        if absence.first <= day <= absence.last:
            spans = list(absence.hours) if absence.kind == "shift" else []
    return [(datetime.combine(day, a, zone), _end_of(day, b, zone)) for a, b in spans]


def _end_of(day: date, end: time, zone: ZoneInfo) -> datetime:
    """23:59 stands for midnight («до 24:00»): a shift to the end of the day ends at the next day's 00:00."""
    if end == time(23, 59):
        return datetime.combine(day + timedelta(days=1), time(0), zone)
    return datetime.combine(day, end, zone)


def cells(start: datetime, length: timedelta) -> list[datetime]:
    """The 30-minute cells a booking of ``length`` from ``start`` occupies."""
    count = max(1, -(-int(length.total_seconds()) // int(CELL.total_seconds())))
    return [start + CELL * i for i in range(count)]


def _ceil_cell(moment: datetime) -> datetime:
    step = int(CELL.total_seconds())
    stamp = moment.timestamp()
    rounded = -(-int(stamp) // step) * step
    return datetime.fromtimestamp(rounded, moment.tzinfo)


def free_slots(
    hours: Hours,
    absences: Iterable[Absence],
    busy: Iterable[datetime],
    after: datetime,
    length: timedelta,
    zone: ZoneInfo,
    limit: int = 4,
    horizon_days: int = 14,
) -> list[datetime]:
    """The first ``limit`` starts after ``after`` where the whole booking fits in working time and none of
    its cells is ``busy``."""
    taken = {b.timestamp() for b in busy}
    absences = list(absences)
    found: list[datetime] = []
    local_day = after.astimezone(zone).date()
    for offset in range(horizon_days):
        day = local_day + timedelta(days=offset)
        for begin, end in working_spans(hours, absences, day, zone):
            start = max(_ceil_cell(begin), _ceil_cell(after.astimezone(zone)))
            while start + length <= end:
                needed = cells(start, length)
                if not any(c.timestamp() in taken for c in needed):
                    found.append(start)
                    if len(found) >= limit:
                        return found
                    start += length
                else:
                    start += CELL
    return found


def fits(hours: Hours, absences: Iterable[Absence], start: datetime, length: timedelta, zone: ZoneInfo) -> bool:
    """Whether a booking from ``start`` lies wholly in the executor's working time that day."""
    local = start.astimezone(zone)
    return any(
        begin <= local and local + length <= end for begin, end in working_spans(hours, absences, local.date(), zone)
    )


def span_text(start: datetime, end: datetime, zone: ZoneInfo) -> str:
    """«08:00–17:00» of one working span; one ending at midnight ends at «24:00», a whole day is
    «круглосуточно»."""
    begin, finish = start.astimezone(zone), end.astimezone(zone)
    closing = "24:00" if finish.date() > begin.date() and finish.time() == time(0) else f"{finish:%H:%M}"
    if begin.time() == time(0) and closing == "24:00":
        return "круглосуточно"
    return f"{begin:%H:%M}–{closing}"


def slot_label(moment: datetime, now: datetime, zone: ZoneInfo) -> str:
    """«сегодня 14:00», «завтра 09:30», «пт 04.12 10:00»: what a slot button says."""
    local, today = moment.astimezone(zone), now.astimezone(zone).date()
    if local.date() == today:
        return f"сегодня {local:%H:%M}"
    if local.date() == today + timedelta(days=1):
        return f"завтра {local:%H:%M}"
    return f"{DAY_NAMES[local.weekday()]} {local:%d.%m %H:%M}"


RESIDENT_CHOOSES = frozenset({Category.MINOR_REPAIR, Category.PAID_SERVICE})
"""Where the resident picks the visit time from the bot's buttons; elsewhere the dispatcher books."""

SLOT_DATA = re.compile(r"^slot:(\d{4}-\d{6}):(\d{9,11}):([A-Za-z0-9_-]{1,32})$")
"""A resident's choice of time: ``slot:<request>:<unix start>:<staff id>`` (64 bytes at most)."""


def slot_data(number: str, start: datetime, staff_id: str) -> str:
    return f"slot:{number}:{int(start.timestamp())}:{staff_id}"


def absences_from(docs: Iterable[Mapping[str, Any]]) -> list[Absence]:
    """The staff directory's exceptions (``{"first", "last", "kind", "hours"}``), the unreadable ones skipped."""
    found = []
    for a in docs:
        try:
            found.append(
                Absence(
                    first=date.fromisoformat(str(a["first"])[:10]),
                    last=date.fromisoformat(str(a["last"])[:10]),
                    kind=str(a.get("kind") or "off"),
                    hours=tuple(hours_of({"0": a.get("hours") or []}).get(0, [])),
                )
            )
        except (KeyError, ValueError, TypeError):
            continue
    return found


def can_go(person: Mapping[str, Any], category: str, building: str | None) -> bool:
    """Whether an active executor with working hours fits the request's trade and serves its building."""
    if person.get("active") is False or not person.get("hours"):
        return False
    trades = trades_for(category)
    if trades and person.get("trade") not in trades:
        return False
    served = person.get("buildings") or []
    return not served or building in served


@dataclass(frozen=True)
class Offered:
    staff_id: str
    name: str
    start: datetime


def offered_times(
    people: Sequence[Mapping[str, Any]],
    busy: Mapping[str, Sequence[datetime]],
    now: datetime,
    category: str,
    zone: ZoneInfo,
    limit: int = 4,
) -> list[Offered]:
    """The earliest distinct starts any fitting executor is free for, one executor per start."""
    length = slot_length(category)
    by_start: dict[datetime, Offered] = {}
    for person in people:
        starts = free_slots(
            hours_of(person.get("hours")),
            absences_from(person.get("absences") or []),
            busy.get(str(person["_id"]), []),
            now,
            length,
            zone,
            limit=limit,
        )
        for start in starts:
            by_start.setdefault(start, Offered(str(person["_id"]), str(person.get("name") or ""), start))
    return [by_start[s] for s in sorted(by_start)[:limit]]
