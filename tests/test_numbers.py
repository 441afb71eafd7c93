"""Registration numbers: an atomic counter per year, never reused."""

from __future__ import annotations

import asyncio

from journal.repository import Journal


async def test_numbers_are_consecutive_and_unique_under_concurrency(journal: Journal) -> None:
    batches = await asyncio.gather(*(journal.reserve_numbers(2026, 3) for _ in range(10)))
    numbers = [n for batch in batches for n in batch]
    assert sorted(numbers) == list(range(1, 31))
    assert all(batch == list(range(batch[0], batch[0] + 3)) for batch in batches)


async def test_each_year_has_its_own_sequence(journal: Journal) -> None:
    assert await journal.reserve_numbers(2026, 2) == [1, 2]
    assert await journal.reserve_numbers(2027, 1) == [1]
    assert await journal.reserve_numbers(2026, 1) == [3]


async def test_a_missing_counter_is_created_before_use(journal: Journal) -> None:
    assert await journal.reserve_numbers(2031, 1) == [1]
