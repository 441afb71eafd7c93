"""Executors in the bot: the same jobs and buttons as the crew app, for those who prefer their messenger.

An executor links their chat once, with the code on the page a dispatcher gives them (``/start
crew-<code>``, which is what the bot's deep link sends). From then on the router hands that chat's messages
to the crew queue, and this worker answers: the jobs of the day, each with its buttons; «Выполнено» asks
what was done and, where the category needs it, the materials; photos sent meanwhile go with the result.
A press is applied once (its id is the messenger's), however often it is redelivered.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from adshub.bus import Bus, Delivery, Finish
from adshub.contract import Button, Inbound, Outbound
from adshub.errors import InvalidInput, NotFound
from bots.texts import STATUS_NAMES
from domain.categories import CATEGORIES, Category
from domain.schedule import CREW_STEPS, RESIDENT_CHOOSES, SLOT_DATA, crew_buttons, offered_times, slot_data, slot_label
from inbox.actions import Actor, required_on_close
from inbox.calendar import Job, Scheduling, SlotTaken
from journal.documents import RequestDoc, StaffDoc, outbound_doc

log = logging.getLogger("adshub.crewbot")

LINK = re.compile(r"^/(?:start|crew)\s+crew-([A-Za-z0-9_-]{6,64})$")
PRESS = re.compile(r"^crew:([a-z_]+):([0-9]{4}-[0-9]{6})$")
CODE_LIFETIME = timedelta(days=7)


def link_code_hash(code: str) -> str:
    return hashlib.sha256(f"telegram-link:{code}".encode()).hexdigest()


def new_link_code() -> str:
    return secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")


def job_buttons(job: Job) -> list[list[tuple[str, str]]]:
    return crew_buttons(job.request["_id"], (job.request.get("crew") or {}).keys())


class CrewBot:
    def __init__(self, scheduling: Scheduling, bus: Bus) -> None:
        self.scheduling = scheduling
        self.inbox = scheduling.inbox
        self.bus = bus
        self.zone = scheduling.zone

    async def start(self) -> None:
        await self.bus.consume_crew(self.handle)

    async def handle(self, deliveries: list[Delivery]) -> Finish | None:
        """One message at a time; a message that cannot be answered is dead-lettered with the reason, and the
        worker goes on."""
        for delivery in deliveries:
            try:
                inbound = Inbound.model_validate_json(delivery.body)
            except ValidationError as exc:
                await self.bus.dead_letter(delivery, f"invalid crew message: {exc.errors()[:3]}", source="crew")
                continue
            try:
                await self.answer(inbound, datetime.now(UTC))
            except Exception as exc:
                log.exception("crew message failed", extra={"message_id": inbound.id})
                await self.bus.dead_letter(delivery, f"crew message failed: {type(exc).__name__}: {exc}", "crew")
                continue
            await delivery.ack()
        return None

    async def issue_code(self, staff_id: str, now: datetime) -> str:
        code = new_link_code()
        fields = {"telegram_code": link_code_hash(code), "telegram_code_until": now + CODE_LIFETIME}
        if not await self.inbox.desk.update_staff(staff_id, fields):
            raise NotFound(staff_id)
        return code

    async def answer(self, inbound: Inbound, now: datetime) -> None:
        desk = self.inbox.desk
        replies: list[tuple[str, list[list[tuple[str, str]]]]] = []
        text = inbound.text.strip()
        chosen = SLOT_DATA.match(str(inbound.payload.get("data") or "")) if inbound.kind == "callback" else None
        if chosen:
            number, stamp, staff_id = chosen.group(1), chosen.group(2), chosen.group(3)
            await self._resident_chose(inbound, number, stamp, staff_id, now)
            return
        linking = LINK.match(text)
        person = await desk.person_by_link(inbound.conversation_key)
        if linking:
            person = await desk.link_chat(
                link_code_hash(linking.group(1)), inbound.channel, inbound.conversation_key, inbound.address, now
            )
            if person is None:
                await self._say(inbound, [("Код привязки не действует. Попросите диспетчера новый.", [])])
                return
            replies.append((f"Здравствуйте, {person['name']}! Теперь заявки будут приходить сюда.", []))
            replies.extend(await self._jobs(person, now))
            await self._say(inbound, replies)
            return
        if person is None:
            await self._say(inbound, [("Этот чат не привязан к исполнителю. Откройте ссылку от диспетчера.", [])])
            return
        pressed = PRESS.match(str(inbound.payload.get("data") or "")) if inbound.kind == "callback" else None
        awaiting: dict[str, Any] = dict(person.get("crew_chat") or {})
        if pressed:
            step, number = pressed.groups()
            replies.extend(await self._press(person, number, step, inbound, now))
        elif awaiting.get("number") and (text or inbound.attachments):
            replies.extend(await self._closing(person, awaiting, inbound, now))
        else:
            replies.extend(await self._jobs(person, now))
        await self._say(inbound, replies)

    async def _resident_chose(self, inbound: Inbound, number: str, stamp: str, staff_id: str, now: datetime) -> None:
        """A resident picked a visit time from the bot's buttons: book it (the visit notice follows on their
        channel), or offer what is free now if someone took it meanwhile."""
        try:
            request, _ = await self.inbox.request(number)
        except NotFound:
            return
        conversation = await self.inbox.desk.conversation(request.get("conversation_id") or "")
        if conversation is None or (conversation.get("channel"), conversation.get("address")) != (
            inbound.channel,
            inbound.address,
        ):
            await self._say(inbound, [("Эта кнопка относится к чужой заявке.", [])])
            return
        told = conversation["_id"]
        if request.get("category") not in RESIDENT_CHOOSES or request.get("status") in ("done", "cancelled"):
            await self._say(inbound, [(f"Время визита по заявке № {number} согласует диспетчер.", [])], told)
            return
        actor = Actor(login="resident", name="Житель", kind="resident")
        start = datetime.fromtimestamp(int(stamp), UTC)
        try:
            await self.scheduling.book(number, staff_id, start, "", actor, now)
        except InvalidInput as exc:
            offers = offered_times(
                await self.scheduling.suitable(request),
                await self._busy(request, now),
                now,
                request["category"],
                self.zone,
            )
            buttons = [[(slot_label(o.start, now, self.zone), slot_data(number, o.start, o.staff_id))] for o in offers]
            lead = "Это время уже заняли." if isinstance(exc, SlotTaken) else str(exc)
            answer = f"{lead} Выберите другое:" if buttons else f"{lead} Диспетчер свяжется с вами и согласует время."
            await self._say(inbound, [(answer, buttons)], told)

    async def _busy(self, request: RequestDoc, now: datetime) -> dict[str, list[datetime]]:
        people = await self.scheduling.suitable(request)
        return await self.scheduling.bookings.busy(
            [p["_id"] for p in people], now - timedelta(hours=4), now + timedelta(days=14)
        )

    async def _press(
        self, person: StaffDoc, number: str, step: str, inbound: Inbound, now: datetime
    ) -> list[tuple[str, list[list[tuple[str, str]]]]]:
        if step == "done":
            request, _ = await self.inbox.request(number)
            if (request.get("executor") or {}).get("id") != person["_id"]:
                return [(f"Заявка № {number} назначена не вам.", [])]
            await self.inbox.desk.update_staff(person["_id"], {"crew_chat": {"number": number, "photos": []}})
            return [(f"Заявка № {number}: напишите, что сделано. Можно приложить фото результата или акта.", [])]
        try:
            applied = await self.scheduling.crew_step(person, number, step, inbound.id, now)
        except (InvalidInput, NotFound) as exc:
            return [(f"Не получилось: {exc}", [])]
        label = CREW_STEPS.get(step, (step, None))[0]
        if not applied:
            return []
        jobs = [j for j in await self.scheduling.jobs(person, now) if j.request["_id"] == number]
        return [(f"Заявка № {number}: отмечено «{label}».", job_buttons(jobs[0]) if jobs else [])]

    async def _closing(
        self, person: StaffDoc, awaiting: dict[str, Any], inbound: Inbound, now: datetime
    ) -> list[tuple[str, list[list[tuple[str, str]]]]]:
        number = str(awaiting["number"])
        photos = [
            *awaiting.get("photos", []),
            *(a.location for a in inbound.attachments if (a.location or "").startswith("gridfs:")),
        ]
        text = inbound.text.strip()
        request, _ = await self.inbox.request(number)
        if not text:
            await self.inbox.desk.update_staff(person["_id"], {"crew_chat": {**awaiting, "photos": photos}})
            return [("Фото получено.", [])]
        if not awaiting.get("result"):
            awaiting = {**awaiting, "result": text[:2000], "photos": photos}
            if "materials" in required_on_close(request["category"]):
                await self.inbox.desk.update_staff(person["_id"], {"crew_chat": awaiting})
                return [("Какие материалы и сколько использовано?", [])]
        else:
            awaiting = {**awaiting, "materials": text[:2000], "photos": photos}
        result = {
            "result": awaiting["result"],
            "materials": awaiting.get("materials", ""),
            "photos": awaiting["photos"],
        }
        try:
            await self.scheduling.crew_step(person, number, "done", f"{inbound.id}:done", now, result)
        except (InvalidInput, NotFound) as exc:
            return [(f"Не получилось закрыть: {exc}", [])]
        finally:
            await self.inbox.desk.update_staff(person["_id"], {"crew_chat": {}})
        return [(f"Заявка № {number} закрыта. Спасибо!", [])]

    async def _jobs(self, person: StaffDoc, now: datetime) -> list[tuple[str, list[list[tuple[str, str]]]]]:
        jobs = await self.scheduling.jobs(person, now)
        if not jobs:
            return [("На сегодня заявок нет.", [])]
        found = []
        for job in jobs:
            r = job.request
            when = f"{self.inbox.texts.local(job.booking['start'], '%H:%M')} " if job.booking else ""
            address = (r.get("address") or {}).get("text") or "адрес не указан"
            phone = (r.get("contact") or {}).get("phone")
            lines = [
                f"{when}№ {r['_id']}{' — АВАРИЯ' if r.get('emergency') else ''}",
                f"{CATEGORIES[Category(r['category'])].name}: {address}",
                (r.get("text") or "")[:300],
                f"Житель: {phone}" if phone else "",
                f"Статус: {STATUS_NAMES.get(r.get('status', ''), '')}",
            ]
            found.append(("\n".join(line for line in lines if line), job_buttons(job)))
        return found

    async def _say(
        self,
        inbound: Inbound,
        replies: list[tuple[str, list[list[tuple[str, str]]]]],
        conversation_id: str | None = None,
    ) -> None:
        """Answer in the chat the message came from: an executor's (kept as a message to staff) or, for a
        resident's choice of time, the resident's conversation."""
        person = None if conversation_id else await self.inbox.desk.person_by_link(inbound.conversation_key)
        for n, (text, buttons) in enumerate(replies):
            outbound = Outbound(
                id=f"{inbound.id}#crew{n}",
                channel=inbound.channel,
                address=inbound.address,
                text=text,
                kind="notice",
                buttons=[[Button(text=t, data=d) for t, d in row] for row in buttons],
                conversation_id=conversation_id,
                author="hub",
            )
            await self.inbox.desk.record_outbound(
                outbound_doc(outbound, contact_id=None, to_staff=person["_id"] if person else None)
            )
            await self.bus.publish_outbound(outbound)
