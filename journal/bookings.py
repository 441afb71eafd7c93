"""Executors' bookings: a booking and the 30-minute cells it occupies, one unique record per executor and
cell. Two dispatchers booking the same time at once both try to insert the same cell; the journal lets
one in, and the other's whole booking is taken back.

Cells are inserted in time order, so of two overlapping bookings the one that loses the first shared cell
stops there: one of them always wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from journal.documents import BookingDoc
from journal.repository import Journal


def cell_id(staff_id: str, at: datetime) -> str:
    return f"{staff_id}:{int(at.timestamp())}"


class Bookings:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.bookings: AsyncCollection[BookingDoc] = journal.bookings
        self.cells: AsyncCollection[dict[str, Any]] = journal.booking_cells

    async def book(self, booking: BookingDoc, cells: Sequence[datetime]) -> bool:
        """Take every cell for the booking or none; False when another booking holds one of them."""
        docs = [
            {
                "_id": cell_id(booking["staff_id"], at),
                "staff_id": booking["staff_id"],
                "at": at,
                "booking": booking["_id"],
            }
            for at in sorted(cells)
        ]
        try:
            await self.cells.insert_many(docs, ordered=True)
        except (BulkWriteError, DuplicateKeyError):
            await self.cells.delete_many({"booking": booking["_id"]})
            return False
        await self.bookings.insert_one(booking)
        return True

    async def cancel(self, booking_id: str, at: datetime, by: str) -> BookingDoc | None:
        found = await self.bookings.find_one_and_update(
            {"_id": booking_id, "status": "booked"},
            {"$set": {"status": "cancelled", "cancelled_at": at, "cancelled_by": by}},
        )
        await self.cells.delete_many({"booking": booking_id})
        return found

    async def busy(self, staff_ids: Iterable[str], start: datetime, end: datetime) -> dict[str, list[datetime]]:
        """The cells each executor has booked between ``start`` and ``end``."""
        result: dict[str, list[datetime]] = {}
        for staff_id in staff_ids:
            cursor = self.cells.find({"staff_id": staff_id, "at": {"$gte": start, "$lt": end}}, {"at": 1})
            result[staff_id] = [doc["at"] async for doc in cursor]
        return result

    async def of_staff(self, staff_id: str, start: datetime, end: datetime) -> list[BookingDoc]:
        cursor = self.bookings.find(
            {"staff_id": staff_id, "start": {"$gte": start, "$lt": end}, "status": "booked"}
        ).sort("start", 1)
        return [doc async for doc in cursor]

    async def of_request(self, number: str) -> list[BookingDoc]:
        cursor = self.bookings.find({"request_number": number}).sort("start", 1)
        return [doc async for doc in cursor]

    async def active_of_request(self, number: str) -> BookingDoc | None:
        return await self.bookings.find_one({"request_number": number, "status": "booked"})

    async def between(self, staff_ids: Iterable[str], start: datetime, end: datetime) -> list[BookingDoc]:
        found: list[BookingDoc] = []
        for staff_id in staff_ids:
            found.extend(await self.of_staff(staff_id, start, end))
        return sorted(found, key=lambda b: b["start"])

    async def in_period(self, period: Mapping[str, Any] | None, limit: int = 50_000) -> list[BookingDoc]:
        """Bookings starting in ``period`` (a ``$gte``/``$lt`` range; None: every one) that stand."""
        query: dict[str, Any] = {"status": "booked"}
        if period:
            query["start"] = dict(period)
        return [doc async for doc in self.bookings.find(query).limit(limit)]

    async def set_progress(self, booking_id: str, fields: dict[str, Any]) -> None:
        await self.bookings.update_one({"_id": booking_id}, {"$set": fields})
