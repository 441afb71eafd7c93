"""The regulatory clocks as pure functions: Moscow time, the chute window, numbering by year."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.categories import CATEGORIES, Category
from domain.deadlines import (
    DeadlinePolicy,
    add_working_days,
    format_number,
    planned_deadline,
    registration_year,
    regulatory_clocks,
    window_due,
)

MSK = ZoneInfo("Europe/Moscow")
POLICY = DeadlinePolicy(tz=MSK)


def msk(*args: int) -> datetime:
    return datetime(*args, tzinfo=MSK).astimezone(UTC)


def by_name(category: Category, at: datetime) -> dict[str, datetime]:
    return {c.name: c.due_at for c in regulatory_clocks(category, at, POLICY)}


def test_water_accident_is_localized_in_30_minutes_and_eliminated_in_3_days() -> None:
    at = msk(2026, 11, 24, 3, 12)
    clocks = by_name(Category.WATER_ACCIDENT, at)
    assert clocks["localize"] == at + timedelta(minutes=30)
    assert clocks["eliminate"] == at + timedelta(days=3)
    assert clocks["inform"] == at + timedelta(minutes=30)
    assert clocks["review"] == at + timedelta(minutes=10)


def test_elimination_counts_from_the_damage_not_from_registration() -> None:
    registered = msk(2026, 11, 24, 9, 0)
    damage = msk(2026, 11, 23, 20, 0)
    clocks = {
        c.name: c.due_at for c in regulatory_clocks(Category.HEATING_ACCIDENT, registered, POLICY, damage_at=damage)
    }
    assert clocks["eliminate"] == damage + timedelta(days=3)
    assert clocks["localize"] == registered + timedelta(minutes=30)


def test_sewer_clog_is_cleared_within_two_hours() -> None:
    at = msk(2026, 2, 1, 4, 0)
    assert by_name(Category.SEWER_CLOG, at)["eliminate"] == at + timedelta(hours=2)


@pytest.mark.parametrize(
    ("registered", "due"),
    [
        ((2026, 11, 24, 23, 30), (2026, 11, 25, 10, 0)),
        ((2026, 11, 24, 22, 0), (2026, 11, 25, 9, 0)),
        ((2026, 11, 24, 7, 0), (2026, 11, 24, 10, 0)),
        ((2026, 11, 24, 12, 0), (2026, 11, 24, 14, 0)),
        ((2026, 12, 31, 23, 59), (2027, 1, 1, 10, 0)),
    ],
)
def test_garbage_chute_clock_runs_only_between_8_and_23_moscow_time(
    registered: tuple[int, ...], due: tuple[int, ...]
) -> None:
    assert by_name(Category.GARBAGE_CHUTE_CLOG, msk(*registered))["eliminate"] == msk(*due)


def test_chute_window_is_evaluated_in_the_company_time_zone() -> None:
    vladivostok = ZoneInfo("Asia/Vladivostok")
    start = datetime(2026, 11, 24, 23, 30, tzinfo=vladivostok)
    assert window_due(start, timedelta(hours=2), POLICY.chute_window, vladivostok) == datetime(
        2026, 11, 25, 10, 0, tzinfo=vladivostok
    )


def test_gas_and_trapped_people_are_handed_off_at_once() -> None:
    at = msk(2026, 11, 24, 3, 0)
    for category in (Category.GAS_SMELL, Category.ELEVATOR_TRAPPED):
        clocks = by_name(category, at)
        assert clocks["handoff"] == at + timedelta(minutes=5)
        assert "eliminate" not in clocks


def test_roof_leak_and_lift_fault_have_one_day() -> None:
    at = msk(2026, 11, 24, 15, 0)
    assert by_name(Category.ROOF_LEAK, at)["eliminate"] == at + timedelta(days=1)
    assert by_name(Category.ELEVATOR_FAULT, at)["eliminate"] == at + timedelta(days=1)


def test_written_answer_skips_weekends() -> None:
    friday = msk(2026, 11, 27, 10, 0)
    assert add_working_days(friday, 10, MSK) == msk(2026, 12, 11, 10, 0)
    assert by_name(Category.CONSULTATION, friday)["answer"] == msk(2026, 12, 11, 10, 0)


def test_every_category_gets_inform_clock_and_emergencies_have_a_deadline() -> None:
    at = msk(2026, 11, 24, 3, 0)
    for code, info in CATEGORIES.items():
        clocks = regulatory_clocks(code, at, POLICY)
        assert "inform" in {c.name for c in clocks}
        if info.emergency and code is not Category.UTILITY_OUTAGE:
            assert planned_deadline(clocks) is not None


def test_planned_deadline_prefers_elimination() -> None:
    at = msk(2026, 11, 24, 3, 0)
    clocks = regulatory_clocks(Category.WATER_ACCIDENT, at, POLICY)
    assert planned_deadline(clocks) == at + timedelta(days=3)


def test_registration_year_rolls_over_at_moscow_midnight() -> None:
    assert registration_year(datetime(2026, 12, 31, 20, 59, tzinfo=UTC), MSK) == 2026
    assert registration_year(datetime(2026, 12, 31, 21, 0, tzinfo=UTC), MSK) == 2027


def test_number_format() -> None:
    assert format_number(2026, 123) == "2026-000123"
    assert format_number(2027, 1) == "2027-000001"


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError):
        regulatory_clocks(Category.OTHER, datetime(2026, 1, 1), POLICY)
