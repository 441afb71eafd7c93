"""What dispatchers do in the inbox, as journal operations: read the unified
inbox, answer on the resident's channel, change a request (audited, deadlines
recomputed), plan a visit, assign an executor, close with a result, send the
municipal notice, mark clocks met.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DESCENDING

from adshub.contract import Event, Outbound
from adshub.errors import InvalidInput, NotFound
from bots.dialogue import State, survey_buttons
from bots.texts import STATUS_NAMES, Texts, describe_problem
from channels import REGISTRY, channel_class
from journal.repository import Journal, audit_entry, next_due
from router.address import Address, extract_address
from router.categories import CATEGORIES, Category, info
from router.deadlines import DeadlinePolicy, planned_deadline, regulatory_clocks
from router.records import address_doc, clocks_doc, reply_subject

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


@dataclass(frozen=True)
class Actor:
    login: str
    name: str

    @property
    def audit_name(self) -> str:
        return f"dispatcher:{self.login}"


def required_on_close(category: str) -> list[str]:
    fields = ["result"]
    if Category(category) in REPAIR_CATEGORIES:
        fields.append("materials")
    return fields


def urgency_key(conv: dict[str, Any], now: datetime) -> tuple[int, int, float]:
    """Emergencies first, then conversations waiting for a person, the longest wait first."""
    waiting = conv.get("waiting_since")
    wait_seconds = (now - waiting).total_seconds() if waiting else -1.0
    return (
        0 if conv.get("emergency") and conv.get("active_request") else 1,
        0 if waiting else 1,
        -wait_seconds if waiting else -(conv.get("last_message_at") or now).timestamp(),
    )


class Inbox:
    def __init__(self, journal: Journal, bus: Any, texts: Texts, policy: DeadlinePolicy, settings: Any) -> None:
        self.journal = journal
        self.bus = bus
        self.texts = texts
        self.policy = policy
        self.settings = settings

    # -- reading ----------------------------------------------------------------

    async def conversations(self, now: datetime, limit: int = 200) -> list[dict[str, Any]]:
        cursor = self.journal.conversations.find({}).sort("last_message_at", DESCENDING).limit(limit)
        convs = [c async for c in cursor]
        numbers = [c["active_request"] for c in convs if c.get("active_request")]
        requests = await self.journal.requests_by_number(numbers)
        for conv in convs:
            request = requests.get(conv.get("active_request") or "")
            if request is not None and request.get("status") in ("done", "cancelled"):
                request = None
            conv["request"] = request
            conv["emergency"] = bool(request and request.get("emergency"))
        convs.sort(key=lambda c: urgency_key(c, now))
        return convs

    async def open_tasks(self) -> list[dict[str, Any]]:
        return [t async for t in self.journal.tasks.find({"status": "open"}).sort("due_at", 1).limit(100)]

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        conv = await self.journal.conversations.find_one({"_id": conversation_id})
        if conv is None:
            raise NotFound(conversation_id)
        contact = await self.journal.contacts.find_one({"_id": conv.get("contact_id")}) or {}
        siblings = [
            c["_id"] async for c in self.journal.conversations.find({"contact_id": conv.get("contact_id")}, {"_id": 1})
        ] or [conversation_id]
        messages = [
            m
            async for m in self.journal.messages.find({"conversation_id": {"$in": siblings}}, {"raw": 0})
            .sort("at", 1)
            .limit(500)
        ]
        requests = [
            r
            async for r in self.journal.requests.find({"contact_id": conv.get("contact_id")})
            .sort("registered_at", DESCENDING)
            .limit(50)
        ]
        keys = {(r.get("address") or {}).get("key") for r in requests} - {None}
        neighbours = []
        if keys:
            neighbours = [
                r
                async for r in self.journal.requests.find(
                    {"address.key": {"$in": sorted(keys)}, "contact_id": {"$ne": conv.get("contact_id")}}
                )
                .sort("registered_at", DESCENDING)
                .limit(50)
            ]
        tasks = [t async for t in self.journal.tasks.find({"conversation_id": {"$in": siblings}}).sort("due_at", 1)]
        await self.journal.with_inform(requests)
        states = await self.journal.delivery_states([m["_id"] for m in messages if m.get("direction") == "out"])
        for message in messages:
            state = states.get(message["_id"])
            if state is not None:
                message["delivery"] = {"status": state["status"], "error": state.get("error"), "sent_at": state["at"]}
        active = next((r for r in requests if r["_id"] == conv.get("active_request")), None)
        return {
            "conversation": conv,
            "contact": contact,
            "messages": messages,
            "requests": requests,
            "address_history": neighbours,
            "tasks": tasks,
            "active": active,
        }

    async def request(self, number: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        doc = await self.journal.request(number)
        if doc is None:
            raise NotFound(number)
        audit = [a async for a in self.journal.audit.find({"request": number}).sort("at", 1)]
        await self.journal.with_inform([doc])
        return doc, audit

    async def staff(self) -> list[dict[str, Any]]:
        return [s async for s in self.journal.staff.find({"active": {"$ne": False}}).sort("name", 1)]

    # -- reviewing and answering -----------------------------------------------------

    async def mark_reviewed(self, conversation_id: str, actor: Actor, now: datetime) -> None:
        """Opening a conversation reviews its messages: the 10-minute review clock is met or not."""
        cursor = self.journal.messages.find(
            {
                "conversation_id": conversation_id,
                "direction": "in",
                "review.done_at": None,
                "review.due_at": {"$ne": None},
            }
        )
        numbers: set[str] = set()
        async for message in cursor:
            met = now <= message["review"]["due_at"]
            await self.journal.messages.update_one(
                {"_id": message["_id"]}, {"$set": {"review.done_at": now, "review.by": actor.login, "review.met": met}}
            )
            if message.get("request_number"):
                numbers.add(message["request_number"])
        for number in numbers:
            await self._complete_clock(number, "review", actor, now)
        await self.journal.conversations.update_one({"_id": conversation_id}, {"$set": {"unread": 0}})

    async def reply(self, conversation_id: str, text: str, actor: Actor, now: datetime) -> Outbound:
        text = text.strip()
        if not text:
            raise InvalidInput("Пустой ответ")
        if len(text) > 4000:
            raise InvalidInput("Ответ длиннее 4000 символов")
        conv = await self.journal.conversations.find_one({"_id": conversation_id})
        if conv is None:
            raise NotFound(conversation_id)
        last_in = await self.journal.messages.find_one(
            {"conversation_id": conversation_id, "direction": "in"}, sort=[("at", DESCENDING)]
        )
        number = conv.get("active_request") or conv.get("last_request")
        thread = [*(last_in or {}).get("thread", [])]
        if last_in and last_in.get("external_ref"):
            thread.append(last_in["external_ref"])
        outbound = Outbound(
            id=f"dispatcher:{uuid.uuid4().hex}",
            channel=conv["channel"],
            address=conv["address"],
            text=text,
            kind="dispatcher",
            conversation_id=conversation_id,
            request_number=number,
            subject=reply_subject((last_in or {}).get("subject"), number)
            if last_in and last_in.get("subject")
            else None,
            thread=thread[-20:],
            author=actor.login,
            created_at=now,
        )
        await self._send(outbound, conv.get("contact_id"))
        await self.journal.conversations.update_one(
            {"_id": conversation_id},
            {
                "$set": {"waiting_since": None, "last_message_at": now, "preview": text[:200], "unread": 0},
                "$inc": {"messages": 1},
            },
        )
        if number:
            await self.journal.record_audit(
                number, actor.audit_name, "reply", {"text": text[:500]}, source="inbox", message_id=outbound.id
            )
        return outbound

    async def _send(self, outbound: Outbound, contact_id: str | None) -> None:
        from router.records import outbound_doc

        await self.journal.messages.insert_one(outbound_doc(outbound, contact_id=contact_id))
        await self.bus.publish_outbound(outbound)
        await self.bus.publish_event(
            Event(
                type="message.out",
                conversation_id=outbound.conversation_id,
                request_number=outbound.request_number,
                message_id=outbound.id,
                data={"channel": outbound.channel, "preview": outbound.text[:200]},
            )
        )

    async def _notify_resident(
        self, request: dict[str, Any], text: str, kind: str, buttons: tuple[tuple[Any, ...], ...] = ()
    ) -> Outbound | None:
        conv = await self.journal.conversations.find_one({"_id": request.get("conversation_id")})
        if conv is None or conv["channel"] == "voicemail":
            return None
        outbound = Outbound(
            id=f"notice:{uuid.uuid4().hex}",
            channel=conv["channel"],
            address=conv["address"],
            text=text,
            kind=kind,
            conversation_id=conv["_id"],  # type: ignore[arg-type]
            request_number=request["_id"],
            buttons=[list(r) for r in buttons],
            author="hub",
            subject=f"Заявка № {request['_id']}" if conv["channel"] == "email" else None,
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
        clocks = clocks_doc(code.value, registered, request.get("received_at") or registered, self.policy)
        for name, old in (request.get("clocks") or {}).items():
            if name in clocks:
                clocks[name].update({k: old.get(k) for k in ("done_at", "met", "by", "warned_at", "breached_at")})
        notify = info(code).notify_municipality
        fields = {
            "category": code.value,
            "emergency": emergency,
            "classified_by": f"dispatcher:{actor.login}",
            "clocks": clocks,
            "next_due_at": next_due(clocks),
            "deadline": planned_deadline(regulatory_clocks(code, registered, self.policy)),
            "updated_at": now,
        }
        if notify and not (request.get("municipal_notice") or {}).get("required"):
            fields["municipal_notice"] = {"required": True, "status": "pending", "sent_at": None}
        await self.journal.requests.update_one({"_id": number}, {"$set": fields})
        await self.journal.corrections.insert_one(
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
        await self._audit(
            number,
            actor,
            "category",
            {"category": [request["category"], code.value], "emergency": [request.get("emergency"), emergency]},
            now,
        )

    async def set_address(self, number: str, text: str, actor: Actor, now: datetime) -> None:
        request = await self._request(number)
        parsed = extract_address(text) or Address(street=text.strip()[:200] or None)
        building = (
            await self.journal.buildings.find_one({"key": address_doc(parsed)["key"]}) if parsed.has_house else None
        )
        doc = address_doc(parsed)
        if building is not None:
            doc["building_id"] = building["_id"]
        await self.journal.requests.update_one({"_id": number}, {"$set": {"address": doc, "updated_at": now}})
        await self._audit(
            number, actor, "address", {"address": [(request.get("address") or {}).get("text"), doc["text"]]}, now
        )

    async def assign(self, number: str, staff_id: str, actor: Actor, now: datetime) -> None:
        request = await self._request(number)
        person = await self.journal.staff.find_one({"_id": staff_id})
        if person is None:
            raise InvalidInput("Исполнитель не найден в справочнике")
        executor = {
            "id": person["_id"],
            "name": person["name"],
            "trade": person.get("trade"),
            "phone": person.get("phone"),
        }
        await self.journal.requests.update_one({"_id": number}, {"$set": {"executor": executor, "updated_at": now}})
        await self._audit(
            number, actor, "executor", {"executor": [(request.get("executor") or {}).get("name"), person["name"]]}, now
        )
        await self._notify_executor(request, person)

    async def _notify_executor(self, request: dict[str, Any], person: dict[str, Any]) -> None:
        context = {**self.texts.request_context(request), "executor": person["name"]}
        text = self.texts.render("assignment", "email", **context)
        for channel, address in (("telegram", person.get("telegram")), ("email", person.get("email"))):
            if not address or channel not in REGISTRY or not channel_class(channel).configured(self.settings):
                continue
            outbound = Outbound(
                id=f"assign:{request['_id']}:{person['_id']}:{uuid.uuid4().hex[:8]}",
                channel=channel,
                address=str(address),
                text=text,
                kind="notice",
                request_number=request["_id"],
                author="hub",
                subject=f"Назначена заявка № {request['_id']}" if channel == "email" else None,
            )
            await self.journal.messages.insert_one(
                {
                    "_id": outbound.id,
                    "direction": "out",
                    "kind": "notice",
                    "channel": channel,
                    "address": outbound.address,
                    "text": text,
                    "request_number": request["_id"],
                    "at": outbound.created_at,
                    "author": "hub",
                    "delivery": {"status": "pending"},
                    "outbound": outbound.model_dump(mode="json"),
                    "conversation_id": None,
                    "to_staff": person["_id"],
                }
            )
            await self.bus.publish_outbound(outbound)
            return

    async def plan_visit(
        self, number: str, when: datetime, reason: str, staff_id: str, actor: Actor, now: datetime
    ) -> None:
        """When access to a flat is needed, the resident is told the date and time, the reason and the employee."""
        request = await self._request(number)
        person = await self.journal.staff.find_one({"_id": staff_id})
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
        await self.journal.requests.update_one({"_id": number}, {"$set": {"visit": visit, "updated_at": now}})
        await self._audit(number, actor, "visit", {"visit": f"{self.texts.local(when)} — {person['name']}"}, now)
        text = self.texts.render(
            "visit",
            self._channel_of(request),
            number=number,
            employee=person["name"],
            when=self.texts.local(when),
            reason=visit["reason"],
        )
        await self._notify_resident(request, text, "notice")

    def _channel_of(self, request: dict[str, Any]) -> str:
        return str(request.get("channel") or "webchat")

    async def add_note(self, number: str, text: str, actor: Actor, now: datetime) -> None:
        await self._request(number)
        if not text.strip():
            raise InvalidInput("Пустая заметка")
        note = {"at": now, "by": actor.login, "text": text.strip()[:2000]}
        await self.journal.requests.update_one({"_id": number}, {"$push": {"notes": note}, "$set": {"updated_at": now}})
        await self._audit(number, actor, "note", {"text": note["text"]}, now)

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
        await self.journal.requests.update_one({"_id": number}, {"$set": fields})
        await self._audit(
            number,
            actor,
            "status",
            {"status": [current, status], **({"result": fields["result"]} if "result" in fields else {})},
            now,
        )
        if status in ("localized", "done"):
            await self._complete_clock(number, "localize", actor, now)
        if status == "done":
            await self._complete_clock(number, "eliminate", actor, now)
            await self._close_conversation(request)
            survey = await self._notify_resident(
                request,
                self.texts.render(
                    "survey", self._channel_of(request), number=number, result=str((result or {}).get("result") or "")
                ),
                "survey",
                buttons=survey_buttons(number),
            )
            if survey is not None:
                await self.journal.requests.update_one({"_id": number}, {"$set": {"survey.asked_at": now}})
                await self.journal.conversations.update_one(
                    {"_id": request.get("conversation_id")},
                    {"$set": {"state": State("survey_comment", number=number).as_dict()}},
                )
        elif status == "cancelled":
            await self._close_conversation(request)
        elif status != "registered":
            await self._notify_resident(
                request,
                self.texts.render(
                    "status_changed", self._channel_of(request), number=number, status=STATUS_NAMES[status], note=""
                ),
                "status",
            )
        await self._follow_incident(number, status, actor, now, fields.get("result"))
        await self.bus.publish_event(
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
        incident = await self.journal.incidents.find_one({"_id": master})
        if incident is None:
            return
        closing = status in ("done", "cancelled")
        if closing:
            await self.journal.incidents.update_one({"_id": master}, {"$set": {"status": "closed", "closed_at": now}})
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
                await self.journal.requests.update_one(
                    {"_id": number},
                    {"$set": {"status": status, "closed_at": now, "result": outcome, "updated_at": now}},
                )
                await self._audit(
                    number, actor, "status", {"status": [request.get("status"), status], "incident": master}, now
                )
                if status == "done":
                    await self._complete_clock(number, "localize", actor, now)
                    await self._complete_clock(number, "eliminate", actor, now)
                await self._close_conversation(request)
            text = self.texts.render(
                "incident_update", self._channel_of(request), number=number, master=master, status=STATUS_NAMES[status]
            )
            await self._notify_resident(
                request, text, "status", buttons=survey_buttons(number) if status == "done" else ()
            )

    async def _close_conversation(self, request: dict[str, Any]) -> None:
        await self.journal.conversations.update_one(
            {"_id": request.get("conversation_id"), "active_request": request["_id"]},
            {"$set": {"active_request": None, "emergency": False, "waiting_since": None}},
        )

    async def complete_clock(self, number: str, clock: str, actor: Actor, now: datetime) -> None:
        await self._request(number)
        await self._complete_clock(number, clock, actor, now)
        await self._audit(number, actor, "clock", {"clock": clock}, now)

    async def _complete_clock(self, number: str, clock: str, actor: Actor, now: datetime) -> None:
        request = await self.journal.request(number)
        if request is None:
            return
        clocks = request.get("clocks") or {}
        entry = clocks.get(clock)
        if entry is None or entry.get("done_at") is not None:
            return
        entry = {**entry, "done_at": now, "by": actor.login, "met": now <= entry["due_at"]}
        clocks = {**clocks, clock: entry}
        await self.journal.requests.update_one(
            {"_id": number, f"clocks.{clock}.done_at": None},
            {"$set": {f"clocks.{clock}": entry, "next_due_at": next_due(clocks)}},
        )

    async def complete_task(self, task_id: str, actor: Actor, now: datetime, note: str = "") -> None:
        """A dispatcher called the resident back; a voicemail request's resident is thereby informed."""
        task = await self.journal.tasks.find_one({"_id": task_id})
        if task is None:
            raise NotFound(task_id)
        if task.get("status") != "open":
            return
        met = now <= task["due_at"]
        await self.journal.tasks.update_one(
            {"_id": task_id},
            {"$set": {"status": "done", "done_at": now, "by": actor.login, "met": met, "note": note.strip()[:1000]}},
        )
        number = task.get("request_number")
        if number:
            await self._complete_clock(number, "inform", actor, now)
            await self._audit(number, actor, "callback", {"phone": task.get("phone"), "met": met}, now)
        await self.bus.publish_event(
            Event(
                type="task.done",
                conversation_id=task.get("conversation_id"),
                request_number=number,
                data={"task": task_id},
            )
        )

    # -- the municipal notice --------------------------------------------------------

    def municipal_notice_text(self, request: dict[str, Any]) -> str:
        context = self.texts.request_context(request)
        return self.texts.render(
            "municipal_notice",
            "email",
            **context,
            problem_detail=describe_problem(request["category"], request.get("text", "")),
            eliminate=self.texts.local((request.get("clocks") or {}).get("eliminate", {}).get("due_at")),
            text=request.get("text", ""),
        )

    async def send_municipal_notice(self, number: str, text: str, actor: Actor, now: datetime) -> None:
        request = await self._request(number)
        notice = request.get("municipal_notice") or {}
        if not notice.get("required"):
            raise InvalidInput("Для этой заявки уведомление органа местного самоуправления не требуется")
        if notice.get("status") == "sent":
            return
        address = self.settings.municipality_email
        if not address:
            raise InvalidInput("Не настроен адрес органа местного самоуправления (ADSHUB_MUNICIPALITY_EMAIL)")
        outbound = Outbound(
            id=f"municipal:{number}",
            channel="email",
            address=address,
            text=text.strip(),
            kind="notice",
            request_number=number,
            author=actor.login,
            subject=f"Уведомление об аварии, заявка № {number}",
        )
        await self.journal.messages.update_one(
            {"_id": outbound.id},
            {
                "$setOnInsert": {
                    "direction": "out",
                    "kind": "notice",
                    "channel": "email",
                    "address": address,
                    "text": outbound.text,
                    "request_number": number,
                    "at": now,
                    "author": actor.login,
                    "delivery": {"status": "pending"},
                    "outbound": outbound.model_dump(mode="json"),
                    "conversation_id": None,
                }
            },
            upsert=True,
        )
        await self.bus.publish_outbound(outbound)
        await self.journal.requests.update_one(
            {"_id": number},
            {
                "$set": {
                    "municipal_notice": {
                        "required": True,
                        "status": "sent",
                        "sent_at": now,
                        "by": actor.login,
                        "address": address,
                        "text": outbound.text,
                    }
                }
            },
        )
        await self._audit(number, actor, "municipal_notice", {"to": address}, now)

    # -- helpers ---------------------------------------------------------------------

    async def _request(self, number: str) -> dict[str, Any]:
        request = await self.journal.request(number)
        if request is None:
            raise NotFound(number)
        return request

    async def _audit(self, number: str, actor: Actor, action: str, changes: dict[str, Any], now: datetime) -> None:
        await self.journal.audit.insert_one(audit_entry(number, actor.audit_name, action, changes, "inbox", at=now))
        await self.bus.publish_event(Event(type="request.updated", request_number=number, data={"action": action}))


def window(days: int, now: datetime | None = None) -> tuple[datetime, datetime]:
    end = now or datetime.now(UTC)
    return end - timedelta(days=days), end
