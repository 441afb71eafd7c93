"""What dispatchers do in the inbox: read the unified inbox, answer on the resident's channel, change a
request (audited, deadlines recomputed), plan a visit, assign an executor, close with a result, send the
municipal notice, mark clocks met.

The decisions are here; storing is the journal's (``journal.desk``), sending is the bus's.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adshub.bus import Bus
from adshub.contract import Button, ChannelProfile, Event, Outbound, OutboundFile, OutboundKind
from adshub.errors import InvalidInput, NotFound
from adshub.settings import Settings
from bots.dialogue import State, survey_buttons
from bots.texts import STATUS_NAMES, Texts, describe_problem
from domain.address import Address, extract_address
from domain.categories import CATEGORIES, Category, info
from domain.clocks import carried_over, next_due
from domain.deadlines import DeadlinePolicy, planned_deadline, regulatory_clocks
from domain.paid import paid_doc, priced, rubles
from domain.phones import normalize_phone
from domain.schedule import crew_buttons
from domain.threading import reply_subject
from inbox.board import Board
from inbox.canned import DEFAULT_CANNED, fill_placeholders
from inbox.rows import Row, build_rows
from inbox.wording import clock_name
from journal.desk import ConversationView, Desk
from journal.documents import (
    AuditDoc,
    ContactDoc,
    ConversationDoc,
    PersonEventDoc,
    RequestDoc,
    StaffDoc,
    StaffNoteDoc,
    TaskDoc,
    address_doc,
    clocks_doc,
    outbound_doc,
)
from journal.repository import Journal, audit_doc

STATUSES = ("registered", "accepted", "in_work", "localized", "done", "cancelled")
TRANSITIONS = {
    "registered": {"accepted", "in_work", "localized", "done", "cancelled"},
    "accepted": {"in_work", "localized", "done", "cancelled"},
    "in_work": {"localized", "done", "cancelled"},
    "localized": {"in_work", "done", "cancelled"},
    "done": set(),
    "cancelled": set(),
}
REPAIR_CATEGORIES = {
    Category.WATER_ACCIDENT,
    Category.HEATING_ACCIDENT,
    Category.SEWER_ACCIDENT,
    Category.ELECTRICITY_ACCIDENT,
    Category.ROOF_LEAK,
    Category.MINOR_REPAIR,
    Category.PAID_SERVICE,
    Category.ELEVATOR_FAULT,
}
"""Closing these needs the materials used, besides the result."""

MAX_REPLY = 4000

NOTICE_WAYS = {"email": "по электронной почте", "phone": "по телефону", "fax": "по факсу", "in_person": "лично"}


EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def _list_items(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,;\n]", text) if part.strip()]


def staff_note(
    text: str,
    actor: Actor,
    now: datetime,
    conversation_id: str | None = None,
    request_number: str | None = None,
    shift: bool = False,
) -> StaffNoteDoc:
    text = text.strip()
    if not text:
        raise InvalidInput("Пустая заметка")
    return {
        "_id": uuid.uuid4().hex,
        "conversation_id": conversation_id,
        "request_number": request_number,
        "shift": shift,
        "text": text[:4000],
        "by": actor.login,
        "by_name": actor.name,
        "at": now,
    }


@dataclass(frozen=True)
class PersonView:
    contact: ContactDoc
    conversations: list[ConversationDoc]
    requests: list[RequestDoc]
    events: list[PersonEventDoc]


@dataclass(frozen=True)
class Actor:
    login: str
    name: str
    kind: str = "dispatcher"
    """``dispatcher``, or ``executor`` acting from the crew app (``login`` is then the staff id)."""

    @property
    def audit_name(self) -> str:
        """What the audit trail keeps: a dispatcher's login, an executor's name (the staff directory may change)."""
        if self.kind == "executor":
            return f"executor:{self.name}"
        return f"{self.kind}:{self.login}"

    @property
    def audit_source(self) -> str:
        """Where the change was made: the dispatchers' inbox, or an executor's phone (crew app or bot)."""
        return "crew" if self.kind == "executor" else "inbox"


def required_on_close(category: str) -> list[str]:
    fields = ["result"]
    if Category(category) in REPAIR_CATEGORIES:
        fields.append("materials")
    return fields


@dataclass(frozen=True)
class ChannelDirectory:
    """The channels the hub knows (their profiles) and those the company's settings switch on."""

    profiles: Mapping[str, ChannelProfile]
    configured: frozenset[str]
    start_links: Mapping[str, Callable[[str], str | None]] = field(default_factory=dict)

    def titles(self) -> dict[str, str]:
        return {name: p.title for name, p in self.profiles.items()}

    def profile(self, name: str | None) -> ChannelProfile:
        found = self.profiles.get(name or "")
        return found if found is not None else ChannelProfile(name or "?", name or "?")

    def executor_channels(self, configured_only: bool = True) -> list[ChannelProfile]:
        """Channels an executor can be notified on (those switched on, unless ``configured_only`` is False)."""
        return [
            p
            for n, p in self.profiles.items()
            if p.notifies_executors and (n in self.configured or not configured_only)
        ]

    def phone_channel(self) -> str | None:
        """The switched-on channel that delivers to phone numbers (SMS), if any."""
        return next((n for n, p in self.profiles.items() if p.reaches_phones and n in self.configured), None)

    def start_link(self, name: str, payload: str) -> str | None:
        """A link opening a chat with the company's bot on ``name`` carrying ``payload``, if it can be made."""
        make = self.start_links.get(name)
        return make(payload) if make is not None and name in self.configured else None

    def official_mail(self) -> ChannelProfile | None:
        return next((p for n, p in self.profiles.items() if p.official_mail and n in self.configured), None)


class Inbox:
    def __init__(
        self,
        journal: Journal,
        bus: Bus,
        texts: Texts,
        policy: DeadlinePolicy,
        settings: Settings,
        channels: ChannelDirectory,
    ) -> None:
        self.journal = journal
        self.desk = Desk(journal)
        self.board = Board(self.desk)
        self.bus = bus
        self.texts = texts
        self.policy = policy
        self.settings = settings
        self.channels = channels

    # -- reading ----------------------------------------------------------------

    async def rows(self) -> list[Row]:
        """The inbox list: every open conversation and the latest others, the nearest clock first."""
        board = await self.board.snapshot()
        return build_rows(list(board.conversations.values()), board.requests, board.contacts, self.policy.review)

    async def open_tasks(self) -> list[TaskDoc]:
        return await self.desk.open_tasks()

    async def conversation(self, conversation_id: str) -> ConversationView:
        view = await self.desk.conversation_view(conversation_id)
        if view is None:
            raise NotFound(conversation_id)
        return view

    async def request(self, number: str) -> tuple[RequestDoc, list[AuditDoc]]:
        found = await self.desk.request_with_audit(number)
        if found is None:
            raise NotFound(number)
        return found

    async def staff(self) -> list[StaffDoc]:
        return await self.desk.staff()

    # -- reviewing and answering -----------------------------------------------------

    async def mark_reviewed(self, conversation_id: str, actor: Actor, now: datetime) -> None:
        """Opening a conversation reviews its messages: the 10-minute review clock is met or not."""
        self.board.changed(conversation_id)
        for number in await self.desk.mark_reviewed(conversation_id, actor.login, now):
            await self.desk.complete_clock(number, "review", actor.login, now)

    async def _worked(self, request: RequestDoc, actor: Actor, now: datetime) -> None:
        """Working a request's card reviews it as surely as opening its conversation does."""
        if request.get("conversation_id"):
            await self.mark_reviewed(str(request["conversation_id"]), actor, now)
        await self.desk.complete_clock(request["_id"], "review", actor.login, now)

    # -- teamwork ------------------------------------------------------------------------

    async def take(self, conversation_id: str, actor: Actor, now: datetime) -> bool:
        """A dispatcher takes a conversation; False when another one has it (they must hand it over)."""
        conv = await self._conversation(conversation_id)
        taken = {"login": actor.login, "name": actor.name, "at": now}
        if not await self.desk.set_taken(conversation_id, taken, unless_taken_by_other=actor.login):
            return False
        await self.mark_reviewed(conversation_id, actor, now)
        await self._teamwork(conv, actor, "taken", {}, now)
        return True

    async def hand_over(self, conversation_id: str, to: Actor, actor: Actor, now: datetime) -> None:
        conv = await self._conversation(conversation_id)
        await self.desk.set_taken(conversation_id, {"login": to.login, "name": to.name, "at": now})
        previous = (conv.get("taken") or {}).get("name")
        await self._teamwork(conv, actor, "handed_over", {"from": previous, "to": to.name}, now)

    async def release(self, conversation_id: str, actor: Actor, now: datetime) -> None:
        conv = await self._conversation(conversation_id)
        if conv.get("taken") is None:
            return
        await self.desk.set_taken(conversation_id, None)
        await self._teamwork(conv, actor, "released", {}, now)

    async def _teamwork(
        self, conv: ConversationDoc, actor: Actor, action: str, changes: dict[str, Any], now: datetime
    ) -> None:
        number = conv.get("active_request")
        if number:
            await self.journal.record_audit(self._audit_entry(number, actor, action, changes, now))
        await self._publish(
            Event(type="conversation.taken", conversation_id=conv["_id"], request_number=number, data={})
        )

    async def _conversation(self, conversation_id: str) -> ConversationDoc:
        conv = await self.desk.conversation(conversation_id)
        if conv is None:
            raise NotFound(conversation_id)
        return conv

    async def add_thread_note(self, conversation_id: str, text: str, actor: Actor, now: datetime) -> None:
        """A note in the thread for colleagues only; residents never see it."""
        conv = await self._conversation(conversation_id)
        await self.desk.add_staff_note(
            staff_note(text, actor, now, conversation_id=conversation_id, request_number=conv.get("active_request"))
        )
        await self._publish(Event(type="note.added", conversation_id=conversation_id, data={}))

    async def add_shift_note(self, text: str, actor: Actor, now: datetime) -> None:
        """A note for the next shift, on the shift page."""
        await self.desk.add_staff_note(staff_note(text, actor, now, shift=True))
        await self._publish(Event(type="shift.note", data={}))

    async def canned_replies(self, request: RequestDoc | None) -> list[dict[str, str]]:
        """The company's canned replies (the defaults while it has none), filled in for ``request``."""
        stored = await self.desk.canned_replies()
        replies = [(c["title"], c["text"]) for c in stored] or list(DEFAULT_CANNED)
        values = self._placeholders(request)
        return [{"title": title, "text": fill_placeholders(text, values)} for title, text in replies]

    def _placeholders(self, request: RequestDoc | None) -> dict[str, str]:
        if request is None:
            return {}
        deadline = request.get("deadline")
        return {
            "номер": str(request["_id"]),
            "срок": self.texts.local(deadline) if deadline else "",
            "адрес": str((request.get("address") or {}).get("text") or ""),
            "категория": CATEGORIES[Category(request["category"])].name,
            "имя": str((request.get("contact") or {}).get("name") or ""),
        }

    async def reply(
        self,
        conversation_id: str,
        text: str,
        actor: Actor,
        now: datetime,
        files: Sequence[Mapping[str, Any]] = (),
    ) -> Outbound:
        """Answer the resident on their conversation's channel, files attached where the channel sends them."""
        text = text.strip()
        if not text and files:
            text = "Файл во вложении" if len(files) == 1 else "Файлы во вложении"
        if not text:
            raise InvalidInput("Пустой ответ")
        if len(text) > MAX_REPLY:
            raise InvalidInput(f"Ответ длиннее {MAX_REPLY} символов")
        conv = await self.desk.conversation(conversation_id)
        if conv is None:
            raise NotFound(conversation_id)
        profile = self.channels.profile(conv["channel"])
        if not profile.can_reply:
            raise InvalidInput(f"{profile.title}: ответить в этот канал нельзя — перезвоните жителю")
        if files and not profile.sends_files:
            raise InvalidInput(f"{profile.title}: вложения в этот канал не отправляются")
        last_in: Mapping[str, Any] = await self.desk.last_inbound(conversation_id) or {}
        number = conv.get("active_request") or conv.get("last_request")
        thread = [*last_in.get("thread", [])]
        if last_in.get("external_ref"):
            thread.append(str(last_in["external_ref"]))
        outbound = Outbound(
            id=f"dispatcher:{uuid.uuid4().hex}",
            channel=conv["channel"],
            address=conv["address"],
            text=text,
            kind="dispatcher",
            conversation_id=conversation_id,
            request_number=number,
            subject=reply_subject(last_in.get("subject"), number) if last_in.get("subject") else None,
            thread=thread[-20:],
            author=actor.login,
            files=[OutboundFile.model_validate(dict(f)) for f in files],
            created_at=now,
        )
        await self._send(outbound, conv.get("contact_id"))
        await self.desk.answered(conversation_id, now, text)
        await self.mark_reviewed(conversation_id, actor, now)
        if number:
            await self.journal.record_audit(
                audit_doc(
                    number, actor.audit_name, "reply", {"text": text[:500]}, actor.audit_source, message_id=outbound.id
                )
            )
        return outbound

    async def _send(self, outbound: Outbound, contact_id: str | None, to_staff: str | None = None) -> None:
        """Keep the message in the journal, then put it on the bus; the inbox sees it at once."""
        await self.desk.record_outbound(outbound_doc(outbound, contact_id=contact_id, to_staff=to_staff))
        await self.bus.publish_outbound(outbound)
        await self._publish(
            Event(
                type="message.out",
                conversation_id=outbound.conversation_id,
                request_number=outbound.request_number,
                message_id=outbound.id,
                data={"channel": outbound.channel, "preview": outbound.text[:200]},
            )
        )

    async def _notify_resident(
        self, request: RequestDoc, text: str, kind: OutboundKind, buttons: tuple[tuple[Any, ...], ...] = ()
    ) -> Outbound | None:
        """Tell the resident on the channel of their conversation, where that channel can answer."""
        conv = await self.desk.conversation(request.get("conversation_id") or "")
        if conv is None:
            return None
        profile = self.channels.profile(conv["channel"])
        if not profile.can_reply:
            return None
        outbound = Outbound(
            id=f"notice:{uuid.uuid4().hex}",
            channel=conv["channel"],
            address=conv["address"],
            text=text,
            kind=kind,
            conversation_id=conv["_id"],
            request_number=request["_id"],
            buttons=[list(r) for r in buttons],
            author="hub",
            subject=f"Заявка № {request['_id']}" if profile.threads_by_subject else None,
        )
        await self._send(outbound, conv.get("contact_id"))
        return outbound

    # -- the request card ------------------------------------------------------------

    async def change_category(
        self, number: str, category: str, emergency: bool | None, actor: Actor, now: datetime
    ) -> None:
        request = await self._request(number)
        try:
            code = Category(category)
        except ValueError:
            raise InvalidInput(f"unknown category {category}") from None
        emergency = CATEGORIES[code].emergency if emergency is None else emergency
        if code.value == request["category"] and emergency == request.get("emergency"):
            return
        registered = request["registered_at"]
        fresh = clocks_doc(code.value, registered, request.get("received_at") or registered, self.policy)
        clocks = carried_over(fresh, request.get("clocks") or {})
        fields: dict[str, Any] = {
            "category": code.value,
            "emergency": emergency,
            "classified_by": f"dispatcher:{actor.login}",
            "clocks": clocks,
            "next_due_at": next_due(clocks),
            "deadline": planned_deadline(regulatory_clocks(code, registered, self.policy)),
            "updated_at": now,
        }
        if info(code).notify_municipality and not (request.get("municipal_notice") or {}).get("required"):
            fields["municipal_notice"] = {"required": True, "status": "pending", "sent_at": None}
        changes = {"category": [request["category"], code.value], "emergency": [request.get("emergency"), emergency]}
        await self.desk.change_request(number, fields, self._audit_entry(number, actor, "category", changes, now))
        await self._worked(request, actor, now)
        await self.desk.record_correction(
            {
                "_id": uuid.uuid4().hex,
                "request": number,
                "text": request.get("text"),
                "category": code.value,
                "emergency": emergency,
                "previous": {
                    "category": request["category"],
                    "emergency": request.get("emergency"),
                    "phrases": request.get("phrases"),
                },
                "by": actor.login,
                "at": now,
            }
        )
        await self._updated(number, "category")

    async def set_address(self, number: str, text: str, actor: Actor, now: datetime) -> None:
        request = await self._request(number)
        parsed = extract_address(text) or Address(street=text.strip()[:200] or None)
        doc: dict[str, Any] = dict(address_doc(parsed) or {})
        building = await self.desk.building(doc.get("key")) if parsed.has_house else None
        if building is not None:
            doc["building_id"] = building["_id"]
        changes = {"address": [(request.get("address") or {}).get("text"), doc.get("text")]}
        await self.desk.change_request(
            number, {"address": doc, "updated_at": now}, self._audit_entry(number, actor, "address", changes, now)
        )
        await self._worked(request, actor, now)
        await self._updated(number, "address")

    async def assign(self, number: str, staff_id: str, actor: Actor, now: datetime) -> None:
        request = await self._request(number)
        person = await self.desk.person(staff_id)
        if person is None:
            raise InvalidInput("Исполнитель не найден в справочнике")
        executor = {
            "id": person["_id"],
            "name": person["name"],
            "trade": person.get("trade"),
            "phone": person.get("phone"),
            "assigned_at": now,
        }
        changes = {"executor": [(request.get("executor") or {}).get("name"), person["name"]]}
        await self.desk.change_request(
            number,
            {"executor": executor, "updated_at": now},
            self._audit_entry(number, actor, "executor", changes, now),
        )
        await self._worked(request, actor, now)
        await self._updated(number, "executor")
        await self._notify_executor(request, person)

    async def _notify_executor(self, request: RequestDoc, person: StaffDoc) -> None:
        """On the first channel that notifies executors and has the person's address under its name; a
        channel that reaches phones (SMS) takes the person's phone when no address is given for it."""
        context = {**self.texts.request_context(request), "executor": person["name"]}
        addresses: Mapping[str, object] = person
        linked = set(person.get("links") or [])
        for profile in self.channels.executor_channels():
            address = addresses.get(profile.name) or (person.get("phone") if profile.reaches_phones else None)
            if not address:
                continue
            outbound = Outbound(
                id=f"assign:{request['_id']}:{person['_id']}:{uuid.uuid4().hex[:8]}",
                channel=profile.name,
                address=str(address),
                text=self.texts.render("assignment", profile.name, **context),
                kind="notice",
                buttons=[
                    [Button(text=t, data=d) for t, d in row]
                    for row in (crew_buttons(request["_id"]) if f"{profile.name}:{address}" in linked else [])
                ],
                request_number=request["_id"],
                author="hub",
                subject=f"Назначена заявка № {request['_id']}" if profile.threads_by_subject else None,
            )
            await self.desk.record_outbound(outbound_doc(outbound, contact_id=None, to_staff=person["_id"]))
            await self.bus.publish_outbound(outbound)
            return

    async def plan_visit(
        self, number: str, when: datetime, reason: str, staff_id: str, actor: Actor, now: datetime
    ) -> None:
        """When access to a flat is needed, the resident is told the date and time, the reason and the employee."""
        request = await self._request(number)
        person = await self.desk.person(staff_id)
        if person is None:
            raise InvalidInput("Сотрудник не найден в справочнике")
        if not reason.strip():
            raise InvalidInput("Укажите причину доступа в квартиру")
        visit = {
            "at": when,
            "reason": reason.strip()[:500],
            "employee": person["name"],
            "staff_id": person["_id"],
            "planned_by": actor.login,
            "planned_at": now,
        }
        changes = {"visit": f"{self.texts.local(when)} — {person['name']}"}
        await self.desk.change_request(
            number, {"visit": visit, "updated_at": now}, self._audit_entry(number, actor, "visit", changes, now)
        )
        await self._worked(request, actor, now)
        await self._updated(number, "visit")
        text = self.texts.render(
            "visit",
            self._channel_of(request),
            number=number,
            employee=person["name"],
            when=self.texts.local(when),
            reason=visit["reason"],
        )
        await self._notify_resident(request, text, "notice")

    async def agree_price(
        self, number: str, quantities: Mapping[str, str], actor: Actor, now: datetime
    ) -> dict[str, Any]:
        """The paid works agreed with the resident, from the price list with the quantities typed; the resident
        is told the items and the total on their channel."""
        request = await self._request(number)
        prices = {p["_id"]: p for p in await self.desk.prices()}
        try:
            items = priced((prices[k], v) for k, v in quantities.items() if k in prices)
        except ValueError as exc:
            raise InvalidInput(f"Количество: {exc}") from None
        if not items:
            raise InvalidInput("Укажите количество хотя бы одной работы из прейскуранта")
        paid = {**paid_doc(items), "agreed_at": now, "by": actor.login}
        changes = {"paid": f"{len(items)} поз., итого {rubles(paid['total'])}"}
        await self.desk.change_request(
            number, {"paid": paid, "updated_at": now}, self._audit_entry(number, actor, "price", changes, now)
        )
        await self._worked(request, actor, now)
        await self._updated(number, "price")
        lines = [f"{i.name} — {i.qty.normalize():f} {i.unit} × {rubles(i.price)} = {rubles(i.sum)}" for i in items]
        text = self.texts.render(
            "price_agreed", self._channel_of(request), number=number, lines=lines, total=rubles(paid["total"])
        )
        await self._notify_resident(request, text, "notice")
        return paid

    async def clear_visit(self, number: str, was: str, actor: Actor, now: datetime) -> None:
        """The visit is off (its booking cancelled): the card stops showing it, the trail keeps it."""
        await self.desk.change_request(
            number,
            {"visit": None, "updated_at": now},
            self._audit_entry(number, actor, "visit_cancelled", {"visit": was}, now),
        )
        await self._updated(number, "visit")

    async def tell_resident(self, request: RequestDoc, text: str) -> Outbound | None:
        return await self._notify_resident(request, text, "notice")

    @staticmethod
    def _channel_of(request: RequestDoc) -> str:
        return str(request.get("channel") or "")

    async def add_note(self, number: str, text: str, actor: Actor, now: datetime) -> None:
        request = await self._request(number)
        if not text.strip():
            raise InvalidInput("Пустая заметка")
        note = {"at": now, "by": actor.login, "by_name": actor.name, "text": text.strip()[:2000]}
        await self.desk.add_note(number, note, self._audit_entry(number, actor, "note", {"text": note["text"]}, now))
        await self._worked(request, actor, now)
        await self._updated(number, "note")

    async def set_status(
        self, number: str, status: str, actor: Actor, now: datetime, result: dict[str, Any] | None = None
    ) -> None:
        request = await self._request(number)
        current = request.get("status", "registered")
        if status not in STATUSES:
            raise InvalidInput(f"unknown status {status}")
        if status == current:
            return
        if status not in TRANSITIONS[current]:
            raise InvalidInput(f"Нельзя перейти из «{STATUS_NAMES[current]}» в «{STATUS_NAMES[status]}»")
        fields: dict[str, Any] = {"status": status, "updated_at": now}
        if status == "done":
            result = result or {}
            missing = [f for f in required_on_close(request["category"]) if not str(result.get(f) or "").strip()]
            if missing:
                names = {"result": "результат", "materials": "использованные материалы"}
                raise InvalidInput("Для закрытия заполните: " + ", ".join(names[m] for m in missing))
            fields.update({"result": {k: v for k, v in result.items() if v}, "closed_at": now})
        if status == "cancelled":
            fields["closed_at"] = now
        changes = {"status": [current, status], **({"result": fields["result"]} if "result" in fields else {})}
        await self.desk.change_request(number, fields, self._audit_entry(number, actor, "status", changes, now))
        await self._worked(request, actor, now)
        await self._updated(number, "status")
        if status in ("localized", "done"):
            await self.desk.complete_clock(number, "localize", actor.login, now)
        if status in ("done", "cancelled"):
            stopped = await self.desk.stop_clocks(number, actor.login, now)
            if stopped:
                await self.journal.record_audit(
                    self._audit_entry(
                        number, actor, "clocks_stopped", {"clocks": [clock_name(c) for c in stopped]}, now
                    )
                )
        if status == "done":
            await self.desk.release_conversation(request.get("conversation_id"), number)
            survey = await self._notify_resident(
                request,
                self.texts.render(
                    "survey", self._channel_of(request), number=number, result=str((result or {}).get("result") or "")
                ),
                "survey",
                buttons=survey_buttons(number),
            )
            if survey is not None:
                await self.desk.survey_asked(number, now)
                await self.desk.set_conversation_state(
                    request.get("conversation_id") or "", State("survey_comment", number=number).as_dict()
                )
        elif status == "cancelled":
            await self.desk.release_conversation(request.get("conversation_id"), number)
        elif status != "registered":
            await self._notify_resident(
                request,
                self.texts.render(
                    "status_changed", self._channel_of(request), number=number, status=STATUS_NAMES[status], note=""
                ),
                "status",
            )
        await self._follow_incident(number, status, actor, now, fields.get("result"))
        await self._publish(
            Event(
                type="request.updated",
                request_number=number,
                conversation_id=request.get("conversation_id"),
                data={"status": status},
            )
        )

    async def _follow_incident(
        self, master: str, status: str, actor: Actor, now: datetime, result: dict[str, Any] | None
    ) -> None:
        """Every reporter of an incident hears how its master goes; closing the master closes theirs."""
        incident = await self.desk.incident(master)
        if incident is None:
            return
        closing = status in ("done", "cancelled")
        if closing:
            await self.desk.close_incident(master, now)
        for reporter in await self.journal.incident_reporters(master):
            number = reporter["_id"]
            if number == master:
                continue
            request = await self.journal.request(number)
            if request is None or request.get("status") in ("done", "cancelled"):
                continue
            if closing:
                outcome = {
                    "result": f"Выполнено в рамках заявки № {master}. {(result or {}).get('result', '')}".strip()
                }
                changes = {"status": [request.get("status"), status], "incident": master}
                await self.desk.change_request(
                    number,
                    {"status": status, "closed_at": now, "result": outcome, "updated_at": now},
                    self._audit_entry(number, actor, "status", changes, now),
                )
                await self._updated(number, "status")
                await self.desk.stop_clocks(number, actor.login, now)
                await self.desk.release_conversation(request.get("conversation_id"), number)
            text = self.texts.render(
                "incident_update", self._channel_of(request), number=number, master=master, status=STATUS_NAMES[status]
            )
            await self._notify_resident(
                request, text, "status", buttons=survey_buttons(number) if status == "done" else ()
            )

    async def complete_clock(self, number: str, clock: str, actor: Actor, now: datetime) -> None:
        request = await self._request(number)
        if clock != "review":
            await self._worked(request, actor, now)
        await self.desk.complete_clock(number, clock, actor.login, now)
        await self.journal.record_audit(self._audit_entry(number, actor, "clock", {"clock": clock}, now))
        await self._updated(number, "clock")

    async def complete_task(self, task_id: str, actor: Actor, now: datetime, note: str = "") -> None:
        """A dispatcher called the resident back; a voicemail request's resident is thereby informed."""
        task = await self.desk.task(task_id)
        if task is None:
            raise NotFound(task_id)
        if task.get("status") != "open":
            return
        met = now <= task["due_at"]
        await self.desk.complete_task(task_id, actor.login, now, met, note.strip()[:1000])
        number = task.get("request_number")
        if number:
            await self.desk.complete_clock(number, "inform", actor.login, now)
            changes = {"phone": task.get("phone"), "met": met}
            await self.journal.record_audit(self._audit_entry(number, actor, "callback", changes, now))
            await self._updated(number, "callback")
        await self._publish(
            Event(
                type="task.done",
                conversation_id=task.get("conversation_id"),
                request_number=number,
                data={"task": task_id},
            )
        )

    # -- people --------------------------------------------------------------------------

    async def person(self, contact_id: str) -> PersonView:
        contact = await self.desk.contact(contact_id)
        if contact is None:
            raise NotFound(contact_id)
        conversations, requests = await self.desk.person_activity(contact_id)
        await self.journal.with_inform(requests)
        return PersonView(contact, conversations, requests, await self.desk.person_events(contact_id))

    async def edit_person(
        self, contact_id: str, name: str, phones: str, emails: str, actor: Actor, now: datetime
    ) -> None:
        """A dispatcher corrects a person's name, phones and mail; each phone and address becomes an identity,
        so the person's next call or letter finds this card."""
        contact = await self.desk.contact(contact_id)
        if contact is None:
            raise NotFound(contact_id)
        parsed_phones: list[str] = []
        for part in _list_items(phones):
            phone = normalize_phone(part)
            if phone is None:
                raise InvalidInput(f"Не похоже на номер телефона: «{part}»")
            parsed_phones.append(phone)
        parsed_emails: list[str] = []
        for part in _list_items(emails):
            if not EMAIL.fullmatch(part):
                raise InvalidInput(f"Не похоже на адрес почты: «{part}»")
            parsed_emails.append(part.lower())
        fields: dict[str, Any] = {
            "name": name.strip()[:200] or None,
            "phones": list(dict.fromkeys(parsed_phones)),
            "emails": list(dict.fromkeys(parsed_emails)),
            "updated_at": now,
        }
        kept = [i for i in contact.get("identities", []) if not i.startswith(("phone:", "email:"))]
        identities = [*kept, *(f"phone:{p}" for p in fields["phones"]), *(f"email:{e}" for e in fields["emails"])]
        clash = await self.desk.identities_elsewhere(contact_id, identities)
        if clash:
            raise InvalidInput("Этот телефон или адрес почты уже в карточке другого жителя: объедините карточки ниже")
        fields["identities"] = identities
        changes = {
            key: [contact.get(key), fields[key]]
            for key in ("name", "phones", "emails")
            if (contact.get(key) or None) != (fields[key] or None)
        }
        if not changes:
            return
        await self.desk.edit_person(contact_id, fields, self._person_event(contact_id, actor, "person", changes, now))
        await self._publish(Event(type="person.updated", data={"contact": contact_id}))

    async def merge_people(self, keep: str, other: str, actor: Actor, now: datetime) -> None:
        """Two cards turned out to be one person: ``other``'s channels, requests and calls move to ``keep``."""
        if keep == other:
            raise InvalidInput("Это одна и та же карточка")
        first, second = await self.desk.contact(keep), await self.desk.contact(other)
        if first is None or second is None:
            raise NotFound(other if first else keep)
        changes = {"name": second.get("name"), "phones": second.get("phones"), "emails": second.get("emails")}
        await self.desk.merge_people(keep, other, self._person_event(keep, actor, "merged", changes, now))
        await self._publish(Event(type="person.updated", data={"contact": keep}))

    @staticmethod
    def _person_event(
        contact_id: str, actor: Actor, action: str, changes: dict[str, Any], now: datetime
    ) -> PersonEventDoc:
        return {
            "_id": uuid.uuid4().hex,
            "contact": contact_id,
            "at": now,
            "actor": actor.audit_name,
            "action": action,
            "changes": changes,
        }

    # -- the municipal notice --------------------------------------------------------

    def municipal_notice_text(self, request: RequestDoc) -> str:
        context = self.texts.request_context(request)
        channel = self.channels.official_mail()
        return self.texts.render(
            "municipal_notice",
            channel.name if channel else "",
            **context,
            problem_detail=describe_problem(request["category"], request.get("text", "")),
            eliminate=self.texts.local((request.get("clocks") or {}).get("eliminate", {}).get("due_at")),
            text=request.get("text", ""),
        )

    def municipal_mail_ready(self) -> bool:
        """Whether the hub can mail the notice itself (an address and an official mail channel)."""
        return bool(self.settings.municipality_email and self.channels.official_mail() is not None)

    async def send_municipal_notice(self, number: str, text: str, actor: Actor, now: datetime) -> None:
        request = await self._request(number)
        notice = request.get("municipal_notice") or {}
        if not notice.get("required"):
            raise InvalidInput("Для этой заявки уведомление органа местного самоуправления не требуется")
        if notice.get("status") == "sent":
            return
        address = self.settings.municipality_email
        channel = self.channels.official_mail()
        if not address or channel is None:
            raise InvalidInput(
                "Адрес почты органа местного самоуправления не указан в настройках (это делает администратор): "
                "сообщите по телефону и отметьте это ниже"
            )
        if not text.strip():
            raise InvalidInput("Пустой текст уведомления")
        outbound = Outbound(
            id=f"municipal:{number}",
            channel=channel.name,
            address=address,
            text=text.strip(),
            kind="notice",
            request_number=number,
            author=actor.login,
            subject=f"Уведомление об аварии, заявка № {number}",
            created_at=now,
        )
        await self.desk.record_outbound(outbound_doc(outbound, contact_id=None))
        await self.bus.publish_outbound(outbound)
        await self._notice_made(request, actor, now, way="email", to=address, text=outbound.text)

    async def record_municipal_notice(
        self, number: str, way: str, to: str, text: str, actor: Actor, now: datetime, at: datetime | None = None
    ) -> None:
        """A notice made another way (by phone, fax, in person): who was told, how and when."""
        request = await self._request(number)
        notice = request.get("municipal_notice") or {}
        if not notice.get("required"):
            raise InvalidInput("Для этой заявки уведомление органа местного самоуправления не требуется")
        if notice.get("status") == "sent":
            return
        if way not in NOTICE_WAYS:
            raise InvalidInput("Выберите способ уведомления")
        if not to.strip():
            raise InvalidInput("Укажите, кому сообщили (орган, должность, фамилия)")
        await self._notice_made(request, actor, at or now, way=way, to=to.strip()[:300], text=text.strip()[:4000])

    async def _notice_made(self, request: RequestDoc, actor: Actor, at: datetime, way: str, to: str, text: str) -> None:
        number = request["_id"]
        sent = {
            "required": True,
            "status": "sent",
            "sent_at": at,
            "by": actor.login,
            "address": to,
            "text": text,
            "way": way,
        }
        await self.desk.change_request(
            number,
            {"municipal_notice": sent},
            self._audit_entry(number, actor, "municipal_notice", {"to": to, "way": NOTICE_WAYS[way]}, at),
        )
        await self._worked(request, actor, at)
        await self._updated(number, "municipal_notice")

    # -- helpers ---------------------------------------------------------------------

    async def _request(self, number: str) -> RequestDoc:
        request = await self.journal.request(number)
        if request is None:
            raise NotFound(number)
        return request

    @staticmethod
    def _audit_entry(number: str, actor: Actor, action: str, changes: dict[str, Any], now: datetime) -> AuditDoc:
        return audit_doc(number, actor.audit_name, action, changes, actor.audit_source, at=now)

    async def _publish(self, event: Event) -> None:
        """Tell every inbox (this one's list at once, without waiting for the event to come back)."""
        contact = event.data.get("contact")
        self.board.changed(event.conversation_id, event.request_number, contact if isinstance(contact, str) else None)
        await self.bus.publish_event(event)

    async def _updated(self, number: str, action: str) -> None:
        await self._publish(Event(type="request.updated", request_number=number, data={"action": action}))
