"""Regulatory clocks of a request (Правила 416 п. 13(1) as amended by № 331; Госстрой № 170).

Pure functions: given a category and the registration time they return the
clocks that apply. Times are UTC in and out; windows such as the garbage chute's
08:00–23:00 are evaluated in the company's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from domain.categories import Category


@dataclass(frozen=True)
class Clock:
    name: str
    """inform, review, localize, eliminate, handoff, answer, callback."""
    label: str
    due_at: datetime
    basis: str


@dataclass(frozen=True)
class DeadlinePolicy:
    """The figures of the law as defaults; regions and companies may configure them."""

    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Moscow"))
    inform: timedelta = timedelta(minutes=30)
    review: timedelta = timedelta(minutes=10)
    callback: timedelta = timedelta(minutes=10)
    handoff: timedelta = timedelta(minutes=5)
    localize: timedelta = timedelta(minutes=30)
    eliminate_accident: timedelta = timedelta(days=3)
    sewer_clog: timedelta = timedelta(hours=2)
    chute: timedelta = timedelta(hours=2)
    chute_window: tuple[time, time] = (time(8, 0), time(23, 0))
    one_day: timedelta = timedelta(days=1)
    answer_working_days: int = 10

    @classmethod
    def from_settings(cls, settings: ClockSettings) -> DeadlinePolicy:
        return cls(
            tz=settings.zone,
            inform=timedelta(minutes=settings.inform_minutes),
            review=timedelta(minutes=settings.review_minutes),
            callback=timedelta(minutes=settings.callback_minutes),
            handoff=timedelta(minutes=settings.handoff_minutes),
        )


class ClockSettings(Protocol):
    """The company's configured clocks (``adshub.settings.Settings`` is one)."""

    @property
    def zone(self) -> ZoneInfo: ...

    inform_minutes: int
    review_minutes: int
    callback_minutes: int
    handoff_minutes: int


ACCIDENTS = {
    Category.WATER_ACCIDENT,
    Category.HEATING_ACCIDENT,
    Category.SEWER_ACCIDENT,
    Category.ELECTRICITY_ACCIDENT,
}

CLOCK_LABELS = {
    "review": "Рассмотреть обращение",
    "inform": "Сообщить заявителю номер, срок и меры",
    "localize": "Локализовать аварию",
    "eliminate": "Устранить",
    "handoff": "Передать в специализированную аварийную службу",
    "answer": "Дать письменный ответ",
    "callback": "Перезвонить",
}


def _clock(name: str, due_at: datetime, basis: str) -> Clock:
    return Clock(name=name, label=CLOCK_LABELS[name], due_at=due_at.astimezone(UTC), basis=basis)


def window_due(start: datetime, duration: timedelta, window: tuple[time, time], tz: ZoneInfo) -> datetime:
    """When ``duration`` of working time has passed, counting only inside the daily window.

    A garbage chute clog reported at 23:30 is due at 10:00 next morning; one
    reported at 22:00 gets an hour tonight and an hour from 08:00.
    """
    opens, closes = window
    local = start.astimezone(tz)
    remaining = duration
    while True:
        day = local.date()
        day_open = datetime.combine(day, opens, tz)
        day_close = datetime.combine(day, closes, tz)
        if local < day_open:
            local = day_open
        if local >= day_close:
            local = datetime.combine(day + timedelta(days=1), opens, tz)
            continue
        available = day_close - local
        if remaining <= available:
            return (local + remaining).astimezone(UTC)
        remaining -= available
        local = datetime.combine(day + timedelta(days=1), opens, tz)


def add_working_days(start: datetime, days: int, tz: ZoneInfo) -> datetime:
    """``days`` working days (Mon–Fri) after ``start``, ending at the same local time."""
    local = start.astimezone(tz)
    added = 0
    while added < days:
        local += timedelta(days=1)
        if local.weekday() < 5:
            added += 1
    return local.astimezone(UTC)


def regulatory_clocks(
    category: Category | str,
    registered_at: datetime,
    policy: DeadlinePolicy,
    *,
    received_at: datetime | None = None,
    electronic: bool = True,
    damage_at: datetime | None = None,
) -> list[Clock]:
    """Every clock that applies to a request of ``category`` registered at ``registered_at``.

    ``received_at`` starts the 10-minute review of an electronic or voice message;
    ``damage_at`` (when the resident says when it started) starts the 3-day
    elimination of an accident, which the law counts from the damage.
    """
    category = Category(category)
    if registered_at.tzinfo is None:
        raise ValueError("registered_at must be timezone-aware")
    clocks: list[Clock] = []
    if electronic:
        clocks.append(_clock("review", (received_at or registered_at) + policy.review, "416 п. 13(1)"))
    clocks.append(_clock("inform", registered_at + policy.inform, "416 п. 13(1)"))

    if category in ACCIDENTS:
        clocks.append(_clock("localize", registered_at + policy.localize, "416 п. 13(1)"))
        clocks.append(
            _clock(
                "eliminate", min(damage_at or registered_at, registered_at) + policy.eliminate_accident, "416 п. 13(1)"
            )
        )
    elif category is Category.SEWER_CLOG:
        clocks.append(_clock("eliminate", registered_at + policy.sewer_clog, "416 п. 13(1)"))
    elif category is Category.GARBAGE_CHUTE_CLOG:
        due = window_due(registered_at, policy.chute, policy.chute_window, policy.tz)
        clocks.append(_clock("eliminate", due, "416 п. 13(1)"))
    elif category in (Category.GAS_SMELL, Category.ELEVATOR_TRAPPED):
        clocks.append(_clock("handoff", registered_at + policy.handoff, "416 п. 13(1)"))
    elif category in (Category.ROOF_LEAK, Category.ELEVATOR_FAULT):
        clocks.append(_clock("eliminate", registered_at + policy.one_day, "Госстрой № 170, прил. 2"))
    elif category is Category.CONSULTATION:
        due = add_working_days(registered_at, policy.answer_working_days, policy.tz)
        clocks.append(_clock("answer", due, "416 п. 34"))
    return clocks


def planned_deadline(clocks: list[Clock]) -> datetime | None:
    """The deadline the resident is told: when the problem will be dealt with."""
    by_name = {c.name: c for c in clocks}
    for name in ("eliminate", "handoff", "answer", "localize"):
        if name in by_name:
            return by_name[name].due_at
    return None


def registration_year(registered_at: datetime, tz: ZoneInfo) -> int:
    """The calendar year of registration in the company's time zone (numbers restart each year)."""
    return registered_at.astimezone(tz).year


def format_number(year: int, seq: int) -> str:
    return f"{year:04d}-{seq:06d}"
