"""Registration numbers: an atomic counter per year, never reused, and never skipped by a router that dies
between reserving and registering."""

from __future__ import annotations

import asyncio

from journal.repository import Journal


def sources(tag: str, count: int) -> list[str]:
    return [f"{tag}:{n}" for n in range(count)]


async def test_numbers_are_consecutive_and_unique_under_concurrency(journal: Journal) -> None:
    batches = await asyncio.gather(*(journal.reserve_numbers(2026, sources(f"b{i}", 3)) for i in range(10)))
    numbers = [n for batch in batches for n in batch]
    assert sorted(numbers) == list(range(1, 31))
    assert all(batch == list(range(batch[0], batch[0] + 3)) for batch in batches)


async def test_each_year_has_its_own_sequence(journal: Journal) -> None:
    assert await journal.reserve_numbers(2026, sources("a", 2)) == [1, 2]
    assert await journal.reserve_numbers(2027, sources("b", 1)) == [1]
    assert await journal.reserve_numbers(2026, sources("c", 1)) == [3]


async def test_a_missing_counter_is_created_before_use(journal: Journal) -> None:
    assert await journal.reserve_numbers(2031, ["m1"]) == [1]


async def test_a_message_that_comes_again_gets_the_number_it_was_given(journal: Journal) -> None:
    """A router reserved numbers and died before registering: the redelivered messages take them again."""
    first = await journal.reserve_numbers(2026, ["m1", "m2", "m3"])
    again = await journal.reserve_numbers(2026, ["m2", "m4", "m1"])
    assert first == [1, 2, 3] and again == [2, 4, 1]
    assert await journal.reserve_numbers(2026, ["m5"]) == [5]
