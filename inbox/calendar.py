"""Executors' time: the next free slots of those who can go to a request, booking one in a click (the
journal refuses a second booking of the same time), moving and cancelling it with everyone told, the
calendar of a trade, the crew app's jobs and actions, and each executor's iCalendar feed.

The decisions are pure (``domain.schedule``); the cells that make a booking exclusive are the journal's
(``journal.bookings``); what residents and executors are told goes through ``Inbox``.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from adshub.contract import Outbound
from adshub.errors import InvalidInput, NotFound
from domain.categories import Category, info
from domain.schedule import (
    CREW_STEPS,
    EXCEPTION_KINDS,
    TRADES,
    Absence,
    absences_from,
    can_go,
    cells,
    fits,
    free_slots,
    hours_of,
    hours_text,
    slot_length,
    working_spans,
)
from inbox.actions import Actor, Inbox
from journal.bookings import Bookings
from journal.documents import OPEN_STATUSES, BookingDoc, RequestDoc, StaffDoc, outbound_doc


class SlotTaken(InvalidInput):
    """Another dispatcher booked the time a moment earlier."""


def absences_of(person: StaffDoc) -> list[Absence]:
    return absences_from(person.get("absences") or [])


def crew_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Offer:
    person: StaffDoc
    starts: list[datetime]


@dataclass(frozen=True)
class Job:
    request: RequestDoc
    booking: BookingDoc | None
    history: list[RequestDoc]


class Scheduling:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.bookings = Bookings(inbox.journal)
        self.zone = inbox.settings.zone

    # -- who can go, and when -------------------------------------------------------------------

    async def suitable(self, request: RequestDoc) -> list[StaffDoc]:
        """Active executors of the request's trades who serve its building, with working hours set."""
        key = (request.get("address") or {}).get("key")
        return [p for p in await self.inbox.staff() if can_go(p, request.get("category") or "", key)]

    async def offers(self, request: RequestDoc, now: datetime, per_person: int = 3) -> list[Offer]:
        length = slot_length(request.get("category") or "")
        people = await self.suitable(request)
        busy = await self.bookings.busy([p["_id"] for p in people], now - length, now + timedelta(days=14))
        offers = []
        for person in people:
            starts = free_slots(
                hours_of(person.get("hours")),
                absences_of(person),
                busy.get(person["_id"], []),
                now,
                length,
                self.zone,
                limit=per_person,
            )
            if starts:
                offers.append(Offer(person, starts))
        return sorted(offers, key=lambda o: o.starts[0])

    # -- booking ----------------------------------------------------------------------------

    async def book(
        self, number: str, staff_id: str, start: datetime, reason: str, actor: Actor, now: datetime
    ) -> BookingDoc:
        """Take the executor's time for the request: the executor is assigned and told, the resident is told
        the date and time, the reason and the employee's full name; an earlier booking of the request is
        released (a move) and its executor told, if someone else."""
        request, _ = await self.inbox.request(number)
        if request.get("status") in ("done", "cancelled"):
            raise InvalidInput("Заявка закрыта")
        person = await self.inbox.desk.person(staff_id)
        if person is None or person.get("active") is False:
            raise InvalidInput("Исполнитель не найден в справочнике")
        length = slot_length(request.get("category") or "")
        if start < now - timedelta(minutes=5):
            raise InvalidInput("Это время уже прошло")
        if not fits(hours_of(person.get("hours")), absences_of(person), start, length, self.zone):
            raise InvalidInput(f"{person['name']} в это время не работает")
        reason = reason.strip() or info_reason(request)
        booking: BookingDoc = {
            "_id": uuid.uuid4().hex,
            "staff_id": staff_id,
            "staff_name": person["name"],
            "request_number": number,
            "start": start,
            "end": start + length,
            "reason": reason[:500],
            "status": "booked",
            "by": actor.login,
            "at": now,
        }
        if not await self.bookings.book(booking, cells(start, length)):
            raise SlotTaken(f"Время {self.inbox.texts.local(start)} у {person['name']} уже занято — выберите другое")
        earlier = [
            b for b in await self.bookings.of_request(number) if b["status"] == "booked" and b["_id"] != booking["_id"]
        ]
        for old in earlier:
            await self.bookings.cancel(old["_id"], now, actor.login)
            if old["staff_id"] != staff_id:
                await self._tell_staff(
                    old["staff_id"], request, "booking_cancelled", when=self.inbox.texts.local(old["start"])
                )
        if (request.get("executor") or {}).get("id") != staff_id:
            await self.inbox.assign(number, staff_id, actor, now)
        await self.inbox.plan_visit(number, start, reason, staff_id, actor, now)
        return booking

    async def cancel(self, number: str, actor: Actor, now: datetime) -> None:
        request, _ = await self.inbox.request(number)
        active = await self.bookings.active_of_request(number)
        if active is None:
            raise InvalidInput("У заявки нет записи к исполнителю")
        await self.bookings.cancel(active["_id"], now, actor.login)
        when = self.inbox.texts.local(active["start"])
        await self.inbox.clear_visit(number, f"{when} — {active['staff_name']}", actor, now)
        await self._tell_staff(active["staff_id"], request, "booking_cancelled", when=when)
        await self.inbox.tell_resident(
            request,
            self.inbox.texts.render("visit_cancelled", str(request.get("channel") or ""), number=number, when=when),
        )

    async def _tell_staff(self, staff_id: str, request: RequestDoc, template: str, **context: Any) -> None:
        person = await self.inbox.desk.person(staff_id)
        if person is None:
            return
        for profile in self.inbox.channels.executor_channels():
            address = cast(Mapping[str, object], person).get(profile.name)
            if not address:
                continue
            outbound = Outbound(
                id=f"staff:{staff_id}:{uuid.uuid4().hex}",
                channel=profile.name,
                address=str(address),
                text=self.inbox.texts.render(template, profile.name, number=request["_id"], **context),
                kind="notice",
                request_number=request["_id"],
                author="hub",
            )
            await self.inbox.desk.record_outbound(outbound_doc(outbound, contact_id=None, to_staff=staff_id))
            await self.inbox.bus.publish_outbound(outbound)
            return

    # -- the calendar -----------------------------------------------------------------------

    async def calendar(self, trade: str, first: datetime, days: int) -> dict[str, Any]:
        """Each executor of ``trade`` (all when empty) by day: working spans and bookings."""
        people = [p for p in await self.inbox.staff() if not trade or p.get("trade") == trade]
        local_first = first.astimezone(self.zone).date()
        dates = [local_first + timedelta(days=i) for i in range(days)]
        start = datetime.combine(local_first, datetime.min.time(), self.zone)
        end = start + timedelta(days=days)
        rows = []
        for person in people:
            bookings = await self.bookings.of_staff(person["_id"], start, end)
            by_day = []
            for day in dates:
                spans = working_spans(hours_of(person.get("hours")), absences_of(person), day, self.zone)
                away = next((a for a in absences_of(person) if a.first <= day <= a.last and a.kind != "shift"), None)
                by_day.append(
                    {
                        "date": day,
                        "spans": spans,
                        "away": EXCEPTION_KINDS.get(away.kind) if away else None,
                        "bookings": [b for b in bookings if b["start"].astimezone(self.zone).date() == day],
                    }
                )
            rows.append({"person": person, "days": by_day})
        return {"rows": rows, "dates": dates, "trade": trade, "trades": TRADES}

    # -- the crew app -----------------------------------------------------------------------------

    async def issue_link(self, staff_id: str) -> str:
        """A new personal link's secret (the old link stops working); only its hash is kept."""
        token = secrets.token_urlsafe(24)
        if not await self.inbox.desk.set_crew_key(staff_id, crew_key(token)):
            raise NotFound(staff_id)
        return token

    async def executor(self, token: str) -> StaffDoc | None:
        if not token or len(token) > 100:
            return None
        person = await self.inbox.desk.person_by_crew_key(crew_key(token))
        return person if person is not None and person.get("active") is not False else None

    async def jobs(self, person: StaffDoc, now: datetime) -> list[Job]:
        """Today's bookings in order, then the executor's other open requests, each with its flat's history."""
        day = now.astimezone(self.zone).date()
        start = datetime.combine(day, datetime.min.time(), self.zone)
        booked = await self.bookings.of_staff(person["_id"], start, start + timedelta(days=1))
        open_requests = await self.inbox.desk.open_requests_of_executor(person["_id"])
        by_number = {r["_id"]: r for r in open_requests}
        jobs: list[Job] = []
        for b in booked:
            request = by_number.pop(b["request_number"], None)
            if request is not None:
                jobs.append(Job(request, b, await self.inbox.desk.flat_history(request)))
        for request in sorted(by_number.values(), key=lambda r: r.get("next_due_at") or r["registered_at"]):
            booking = await self.bookings.active_of_request(request["_id"])
            jobs.append(Job(request, booking, await self.inbox.desk.flat_history(request)))
        return jobs

    async def crew_step(
        self,
        person: StaffDoc,
        number: str,
        step: str,
        action_id: str,
        now: datetime,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """One button of the crew app. ``action_id`` is made by the phone: an action queued offline and sent
        twice is applied once. Returns False for a repeat."""
        if step not in CREW_STEPS:
            raise InvalidInput("Неизвестное действие")
        request, _ = await self.inbox.request(number)
        if (request.get("executor") or {}).get("id") != person["_id"]:
            raise NotFound(number)
        if not await self.inbox.desk.first_crew_action(f"crew:{action_id}", number, person["_id"], step, now):
            return False
        actor = Actor(login=person["_id"], name=person["name"], kind="executor")
        _, status = CREW_STEPS[step]
        booking = await self.bookings.active_of_request(number)
        if booking is not None:
            await self.bookings.set_progress(booking["_id"], {f"progress.{step}": now})
        await self.inbox.desk.crew_progress(number, step, now)
        current = request.get("status") or "registered"
        if status is not None and status != current and not (status == "in_work" and current == "localized"):
            await self.inbox.set_status(number, status, actor, now, result if status == "done" else None)
        return True


def staff_extras() -> dict[str, Any]:
    """What the staff page needs to show and edit working time."""
    return {
        "trades": TRADES,
        "hours_text": lambda p: hours_text(hours_of(p.get("hours"))),
        "absences_text": lambda p: "\n".join(
            f"{a['first']} — {a['last']} {EXCEPTION_KINDS.get(a.get('kind', ''), '')}"
            + (f" {' '.join('-'.join(h) for h in a.get('hours') or [])}" if a.get("hours") else "")
            for a in p.get("absences") or []
        ),
    }


def info_reason(request: RequestDoc) -> str:
    try:
        return info(Category(request["category"])).name
    except (KeyError, ValueError):
        return "осмотр"


def ics_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def ics_feed(person: StaffDoc, bookings: list[BookingDoc], requests: dict[str, RequestDoc], company: str) -> str:
    """An iCalendar (RFC 5545) feed of an executor's bookings, for the phone's calendar."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:-//adshub//{ics_escape(company)}//RU",
        "CALSCALE:GREGORIAN",
        f"X-WR-CALNAME:{ics_escape('Заявки — ' + person['name'])}",
    ]
    for b in bookings:
        request: Mapping[str, Any] = requests.get(b["request_number"]) or {}
        address = ((request.get("address") or {}).get("text")) or ""
        lines += [
            "BEGIN:VEVENT",
            f"UID:{b['_id']}@adshub",
            f"DTSTAMP:{stamp}",
            f"DTSTART:{b['start'].astimezone(UTC):%Y%m%dT%H%M%SZ}",
            f"DTEND:{b['end'].astimezone(UTC):%Y%m%dT%H%M%SZ}",
            f"SUMMARY:{ics_escape('Заявка № ' + b['request_number'] + ': ' + b.get('reason', ''))}",
            f"LOCATION:{ics_escape(address)}",
            f"DESCRIPTION:{ics_escape(str(request.get('text') or '')[:500])}",
            f"STATUS:{'CANCELLED' if b.get('status') == 'cancelled' else 'CONFIRMED'}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"


def _fold(line: str) -> str:
    """RFC 5545 lines of at most 75 octets, continued with a space."""
    out, current = [], b""
    for char in line:
        encoded = char.encode()
        if len(current) + len(encoded) > 75:
            out.append(current.decode())
            current = b" "
        current += encoded
    out.append(current.decode())
    return "\r\n".join(out)


__all__ = ["CREW_STEPS", "OPEN_STATUSES", "Job", "Offer", "Scheduling", "SlotTaken", "ics_feed"]
