"""The router: from an inbound message on the bus to a registered request, a
reply on the resident's channel and events for the dispatcher inbox.

It consumes in batches so that under load one round trip to the database
serves many messages; under light load a batch is a single message. It acks
a message only after the journal write, and publishes replies before acking,
so a crash anywhere means redelivery, and redelivery means the same request
and at most one reply (deterministic ids, a unique source index).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pymongo import UpdateOne

from adshub.bus import Delivery, Finish, RabbitBus
from adshub.contract import Event, Inbound, Outbound, utcnow
from adshub.metrics import METRICS
from bots.dialogue import RequestView, Situation, State, Step, plan, request_number_in, status_buttons
from bots.texts import Texts
from journal.buildings import canonical, match_building
from journal.repository import Commit, Journal, audit_entry, is_transient, next_due
from router.address import Address, extract_address
from router.categories import info
from router.classify import classify
from router.deadlines import DeadlinePolicy, format_number, planned_deadline, registration_year, regulatory_clocks
from router.incidents import WINDOW as INCIDENT_WINDOW
from router.incidents import incident_of
from router.phones import extract_phones, normalize_phone
from router.records import (
    address_doc,
    building_key,
    clocks_doc,
    inbound_doc,
    outbound_doc,
    reply_subject,
    reply_thread,
    request_doc,
)

log = logging.getLogger("adshub.router")

MAX_BATCH = 64
LANES = 1
"""Batches in flight at once; one conversation always stays in one lane."""


@dataclass
class Outcome:
    outbounds: list[Outbound] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)


@dataclass
class _Work:
    """One inbound message on its way through a round."""

    inbound: Inbound
    contact: dict[str, Any]
    conversation: dict[str, Any]
    step: Step | None = None
    number: str | None = None
    request: dict[str, Any] | None = None
    looked_up: dict[str, Any] | None = None
    replaces: str | None = None
    """A late transcript or edit of a message that never became a request: its id."""
    address_unknown: bool = False
    incident: dict[str, Any] | None = None
    """The incident this registration joined (another request is its master)."""
    recovered: bool = False
    """The request this message registers was written by an attempt that died before the message was."""
    replayed: bool = False
    """The conversation already shows this message's effects; it was planned from the state before them."""


def _view(doc: dict[str, Any] | None) -> RequestView | None:
    if doc is None:
        return None
    return RequestView(
        number=doc["_id"],
        category=doc["category"],
        emergency=bool(doc.get("emergency")),
        status=doc.get("status", "registered"),
        contact_id=doc.get("contact_id"),
        address=Address.from_dict({k: v for k, v in (doc.get("address") or {}).items() if k not in ("text", "key")}),
        deadline=doc.get("deadline"),
        registered_at=doc.get("registered_at"),
    )


class Router:
    def __init__(
        self,
        journal: Journal,
        bus: RabbitBus,
        texts: Texts,
        policy: DeadlinePolicy,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.journal = journal
        self.bus = bus
        self.texts = texts
        self.policy = policy
        self.clock = clock
        self._transient_failures = 0
        self._directory: list[dict[str, Any]] = []
        self._directory_read = -1e9

    async def start(self) -> None:
        await self.bus.consume(
            self.bus.topology.inbound_queue, self.handle, max_batch=MAX_BATCH, max_wait=0.002, lanes=LANES
        )

    # -- consuming ------------------------------------------------------------

    async def handle(self, deliveries: list[Delivery]) -> Finish | None:
        """Record the batch in the journal; what remains (replies, events, acks) is returned as the
        batch's finishing step, which the consumer runs while the next batch is being recorded.

        Messages that cannot be recorded are settled here: requeued after a backoff, or dead-lettered."""
        work: list[tuple[Delivery, Inbound]] = []
        for delivery in deliveries:
            try:
                work.append((delivery, Inbound.model_validate_json(delivery.body)))
            except ValidationError as exc:
                await self._dead_letter(delivery, f"invalid inbound message: {_summary(exc)}")
        if not work:
            return None
        first: dict[str, tuple[Delivery, Inbound]] = {}
        duplicates: list[Delivery] = []
        for delivery, inbound in work:
            if inbound.id in first:
                duplicates.append(delivery)
            else:
                first[inbound.id] = (delivery, inbound)
        redelivered = {inb.id for d, inb in first.values() if d.redelivered}
        try:
            outcome = await self.process([inb for _, inb in first.values()], redelivered)
        except Exception as exc:
            await self._not_recorded(exc, first, duplicates)
            return None
        recorded = [d for d, _ in first.values()] + duplicates
        return lambda: self._finish(outcome, recorded)

    async def _not_recorded(
        self, exc: Exception, first: dict[str, tuple[Delivery, Inbound]], duplicates: list[Delivery]
    ) -> None:
        if is_transient(exc):
            await self._back_off(exc, [d for d, _ in first.values()] + duplicates)
            return
        if len(first) == 1:
            ((delivery, inbound),) = first.values()
            log.exception("cannot process message", extra={"message_id": inbound.id})
            await self._dead_letter(delivery, f"{type(exc).__name__}: {exc}")
        else:
            log.warning("batch of %d failed (%s); processing one by one", len(first), exc)
            for delivery, _ in first.values():
                finish = await self.handle([delivery])
                if finish is not None:
                    await finish()
        for d in duplicates:
            await d.ack()

    async def _finish(self, outcome: Outcome, recorded: list[Delivery]) -> None:
        """Replies are confirmed by the broker before the messages are acked: a crash in between means
        redelivery, and a redelivered message that was recorded only has its replies sent again."""
        try:
            await self.bus.publish_outbounds(outcome.outbounds)
        except Exception as exc:
            await self._back_off(exc, recorded)
            return
        await self.bus.publish_events(outcome.events)
        self._transient_failures = 0
        await asyncio.gather(*(d.ack() for d in recorded))

    async def _back_off(self, exc: BaseException, deliveries: Sequence[Delivery]) -> None:
        """Wait, then return the messages to the queue: no hot loop, no dead-lettering of transient errors."""
        self._transient_failures += 1
        delay = min(0.25 * 2 ** min(self._transient_failures, 6), 10.0) * (0.75 + random.random() / 2)
        log.warning(
            "transient failure (%s: %s); retrying %d message(s) in %.1fs",
            type(exc).__name__,
            exc,
            len(deliveries),
            delay,
        )
        METRICS.transient_retries.inc(len(deliveries))
        await asyncio.sleep(delay)
        for delivery in deliveries:
            await delivery.nack(requeue=True)

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        log.error("dead-lettering message: %s", reason, extra={"message_id": delivery.message_id})
        METRICS.dead_letters.labels(source="inbound").inc()
        await self.bus.dead_letter(delivery, reason, source=self.bus.topology.inbound_queue)

    # -- processing -----------------------------------------------------------

    async def process(self, inbounds: Sequence[Inbound], redelivered: set[str] | None = None) -> Outcome:
        """Register, attach or answer each message; several messages of one conversation go in order."""
        outcome = Outcome()
        rounds: list[list[Inbound]] = []
        depth: dict[str, int] = defaultdict(int)
        for inbound in inbounds:
            level = depth[inbound.conversation_key]
            depth[inbound.conversation_key] += 1
            while len(rounds) <= level:
                rounds.append([])
            rounds[level].append(inbound)
        for batch in rounds:
            await self._round(batch, redelivered or set(), outcome)
        return outcome

    async def _round(self, inbounds: list[Inbound], redelivered: set[str], outcome: Outcome) -> None:
        ids = [m.id for m in inbounds]
        edit_targets = [m.edit_of for m in inbounds if m.edit_of]
        seen, contacts, known_conversations = await asyncio.gather(
            self.journal.processed(ids + edit_targets),
            self._contacts(inbounds),
            self.journal.conversations_by_id({m.conversation_key for m in inbounds}),
        )
        done = [i for i in ids if i in seen]
        if done:
            replays = await self.journal.replies_to(done)
            outcome.outbounds.extend(
                Outbound.model_validate(doc["outbound"])
                for doc in replays
                if doc.get("delivery", {}).get("status") != "sent"
            )
        fresh = [m for m in inbounds if m.id not in seen]
        if not fresh:
            return
        fresh = [self._unregistered_edit(m, seen) for m in fresh]
        conversations = self._conversations(fresh, contacts, known_conversations)
        work = [_Work(m, contacts[m.id], conversations[m.conversation_key]) for m in fresh]
        for w in work:
            _replay(w)
            if w.inbound.payload.get("replaces"):
                w.replaces = str(w.inbound.payload["replaces"])

        extracted = {w.inbound.id: extract_address(w.inbound.text) if w.inbound.text else None for w in work}
        directory = await self._buildings()
        for w in work:
            found = extracted[w.inbound.id]
            if directory and found is not None and found.has_house:
                building = match_building(found, directory)
                if building is not None:
                    extracted[w.inbound.id] = canonical(found, building)
                else:
                    w.address_unknown = True
        refs = [r for w in work for r in w.inbound.thread]
        thread_numbers = await self.journal.numbers_by_external_refs(refs) if refs else {}
        wanted: set[str] = set()
        for w in work:
            conv = w.conversation
            wanted.update(
                n
                for n in (conv.get("active_request"), (conv.get("state") or {}).get("number"), conv.get("last_request"))
                if n
            )
            wanted.update(thread_numbers.get(r, "") for r in w.inbound.thread)
            if w.inbound.edit_of and seen.get(w.inbound.edit_of):
                wanted.add(seen[w.inbound.edit_of].get("request_number") or "")
            for text in (
                w.inbound.subject or "",
                str(w.inbound.payload.get("args") or ""),
                str(w.inbound.payload.get("data") or ""),
                w.inbound.text if w.inbound.kind == "command" else "",
            ):
                number = request_number_in(text)
                if number:
                    wanted.add(number)
        related = await self.journal.requests_by_number(wanted)

        now = self.clock()
        for w in work:
            w.step = plan(self._situation(w, related, thread_numbers, now), extracted[w.inbound.id])

        commit = Commit()
        await self._number_and_link(work, redelivered, now, commit)
        for w in work:
            self._record(w, seen, related, now, commit, outcome)
        await self.journal.commit(commit)
        for w in work:
            if w.request is not None:
                METRICS.registration_latency.observe(max(0.0, (now - w.inbound.received_at).total_seconds()))

    async def _buildings(self) -> list[dict[str, Any]]:
        """The company's buildings directory, re-read at most once a minute."""
        if time.monotonic() - self._directory_read > 60:
            self._directory = await self.journal.buildings_directory()
            self._directory_read = time.monotonic()
        return self._directory

    @staticmethod
    def _restore_incidents(
        masters: list[tuple[_Work, str, str]], found: dict[str, dict[str, Any]], commit: Commit
    ) -> None:
        for w, key, kind in masters:
            assert w.request is not None and w.number is not None
            incident = found.get(key)
            if incident is None:
                incident = _incident(w.number, key, kind, w.request, w.request["registered_at"])
                found[key] = incident
                commit.incidents.append(incident)
            elif incident["_id"] != w.number:
                w.incident = incident
                w.request["incident_id"] = incident["_id"]
                commit.request_updates.append(UpdateOne({"_id": w.number}, {"$set": {"incident_id": incident["_id"]}}))

    def _link_incidents(
        self, candidates: list[tuple[_Work, str, str]], found: dict[str, dict[str, Any]], now: datetime, commit: Commit
    ) -> None:
        """Reports of one accident at one building within hours of the first join its incident.

        Joining writes nothing to the incident: the link is the request's incident_id."""
        for key, incident in list(found.items()):
            if incident["opened_at"] < now - INCIDENT_WINDOW:
                commit.incident_updates.append(UpdateOne({"_id": incident["_id"]}, {"$set": {"status": "expired"}}))
                del found[key]
        for w, key, kind in candidates:
            assert w.request is not None and w.number is not None
            incident = found.get(key)
            if incident is None:
                incident = _incident(w.number, key, kind, w.request, now)
                found[key] = incident
                commit.incidents.append(incident)
            else:
                w.incident = incident
            w.request["incident_id"] = incident["_id"]

    def _situation(
        self, w: _Work, related: dict[str, dict[str, Any]], thread_numbers: dict[str, str], now: datetime
    ) -> Situation:
        conv = w.conversation
        inbound = w.inbound
        active = related.get(conv.get("active_request") or "")
        threaded_number = next((thread_numbers[r] for r in reversed(inbound.thread) if r in thread_numbers), None)
        threaded_number = threaded_number or request_number_in(inbound.subject or "")
        threaded = related.get(threaded_number or "")
        if threaded is not None and threaded.get("contact_id") != w.contact["_id"]:
            threaded = None
        lookup = request_number_in(str(inbound.payload.get("args") or inbound.payload.get("data") or ""))
        if inbound.kind == "command" and not lookup:
            lookup = conv.get("active_request") or conv.get("last_request")
        w.looked_up = related.get(lookup or "")
        return Situation(
            inbound=inbound,
            now=now,
            state=State.from_dict(conv.get("state")),
            active=_view(active),
            threaded=_view(threaded),
            looked_up=_view(related.get(lookup or "")),
            remembered_address=Address.from_dict(
                {k: v for k, v in (w.contact.get("address") or {}).items() if k not in ("text", "key")}
            ),
            contact_id=w.contact["_id"],
            address_unknown=w.address_unknown,
        )

    async def _number_and_link(self, work: list[_Work], redelivered: set[str], now: datetime, commit: Commit) -> None:
        """Give every new registration its number and its incident, in one round trip to the journal.

        A redelivered message may have registered its request before the attempt died: it keeps that
        number (and incident). The request is found by the draft's source, which for a registration
        completed by an answer (the address asked for) is the earlier message. Incidents are written
        after requests, so a recovered master may have lost its incident: it is opened again, or, if
        another report opened one meanwhile, the request joins that one."""
        registering: list[tuple[_Work, str]] = [
            (w, w.step.draft.source_message_id)
            for w in work
            if w.step is not None and w.step.action == "register" and w.step.draft is not None
        ]
        wanted = [source for w, source in registering if w.inbound.id in redelivered]
        existing = await self.journal.requests_by_source(wanted) if wanted else {}
        need: list[_Work] = []
        masters: list[tuple[_Work, str, str]] = []
        for w, source in registering:
            known = existing.get(source)
            if known is None:
                need.append(w)
                continue
            w.number, w.request, w.recovered = known["_id"], known, True
            incident = incident_of(known["category"], known.get("text", ""), (known.get("address") or {}).get("key"))
            if known.get("incident_id") == w.number and incident is not None:
                masters.append((w, *incident))
        candidates: list[tuple[_Work, str, str]] = []
        for w in need:
            assert w.step is not None and w.step.draft is not None
            draft = w.step.draft
            incident = incident_of(draft.classification.category.value, draft.text, building_key(draft.address))
            if incident is not None:
                candidates.append((w, *incident))
        year = registration_year(now, self.policy.tz)
        seqs, found = await asyncio.gather(
            self.journal.reserve_numbers(year, len(need)),
            self.journal.open_incidents([key for _, key, _ in [*masters, *candidates]]),
        )
        self._restore_incidents(masters, found, commit)
        for w, seq in zip(need, seqs, strict=True):
            w.number = format_number(year, seq)
            assert w.step is not None and w.step.draft is not None
            w.request = request_doc(
                number=w.number,
                year=year,
                seq=seq,
                draft=w.step.draft,
                inbound=w.inbound,
                contact=w.contact,
                conversation_id=w.conversation["_id"],
                registered_at=now,
                policy=self.policy,
            )
            w.request["_new"] = True
        self._link_incidents(candidates, found, now, commit)

    def _record(
        self,
        w: _Work,
        seen: dict[str, dict[str, Any]],
        related: dict[str, dict[str, Any]],
        now: datetime,
        commit: Commit,
        outcome: Outcome,
    ) -> None:
        step, inbound, conv, contact = w.step, w.inbound, w.conversation, w.contact
        assert step is not None
        number = w.number or step.number
        actor = f"resident:{contact['_id']}"

        new = w.request is not None and w.request.pop("_new", False)
        if new:
            commit.requests.append(w.request)
        if w.request is not None and (new or w.recovered):
            commit.audits.append(
                audit_entry(
                    w.number or "",
                    "hub",
                    "registered",
                    {
                        "category": w.request["category"],
                        "emergency": w.request["emergency"],
                        "address": (w.request.get("address") or {}).get("text"),
                        "channel": inbound.channel,
                    },
                    source="router",
                    message_id=inbound.id,
                    at=w.request.get("registered_at") or now,
                    entry_id=f"{inbound.id}#registered",
                )
            )
            outcome.registered.append(w.number or "")
            log.info(
                "registered request %s: %s%s",
                w.number,
                w.request["category"],
                " (emergency)" if w.request["emergency"] else "",
                extra={"message_id": inbound.id, "request_number": w.number, "channel": inbound.channel},
            )
            extra_ids = [i for i in w.request.get("message_ids", []) if i != inbound.id]
            if extra_ids:
                commit.message_updates.append(
                    UpdateOne({"_id": {"$in": extra_ids}}, {"$set": {"request_number": w.number}})
                )

        if step.action == "attach" and number:
            update: dict[str, Any] = {"$set": {"updated_at": now}, "$inc": {"follow_ups": 1}}
            if step.address is not None:
                update["$set"]["address"] = address_doc(step.address)
                commit.audits.append(
                    audit_entry(
                        number,
                        actor,
                        "address",
                        {"address": step.address.text()},
                        source=inbound.channel,
                        message_id=inbound.id,
                        at=now,
                        entry_id=f"{inbound.id}#address",
                    )
                )
            if inbound.attachments:
                update["$push"] = {"attachments": {"$each": [a.model_dump() for a in inbound.attachments]}}
            commit.request_updates.append(UpdateOne({"_id": number}, update))
        elif step.action == "rate" and number and step.rating:
            commit.request_updates.append(
                UpdateOne(
                    {"_id": number, "contact_id": contact["_id"]},
                    {"$set": {"survey.rating": step.rating, "survey.rated_at": now, "updated_at": now}},
                )
            )
            commit.audits.append(
                audit_entry(
                    number,
                    actor,
                    "survey",
                    {"rating": step.rating},
                    source=inbound.channel,
                    message_id=inbound.id,
                    at=now,
                    entry_id=f"{inbound.id}#survey",
                )
            )
        elif step.action == "comment" and number and step.comment:
            commit.request_updates.append(
                UpdateOne(
                    {"_id": number, "contact_id": contact["_id"]},
                    {"$set": {"survey.comment": step.comment, "updated_at": now}},
                )
            )
            commit.audits.append(
                audit_entry(
                    number,
                    actor,
                    "survey",
                    {"comment": step.comment},
                    source=inbound.channel,
                    message_id=inbound.id,
                    at=now,
                    entry_id=f"{inbound.id}#comment",
                )
            )
        elif step.action == "edit" and inbound.edit_of:
            original = seen.get(inbound.edit_of)
            request = related.get((original or {}).get("request_number") or "")
            self._record_edit(inbound, original, request, now, commit, outcome)
        elif step.action == "callback_task":
            commit.tasks.append(self._callback_task(inbound, contact, conv, now))
            outcome.events.append(
                Event(
                    type="task.callback",
                    conversation_id=conv["_id"],
                    message_id=inbound.id,
                    data={"phone": inbound.sender.phone or inbound.sender.id},
                )
            )

        if not inbound.answerable and step.action in ("register", "attach") and number:
            task = self._callback_task(inbound, contact, conv, now)
            task["request_number"] = number
            commit.tasks.append(task)
            outcome.events.append(
                Event(
                    type="task.callback",
                    conversation_id=conv["_id"],
                    request_number=number,
                    message_id=inbound.id,
                    data={"phone": task["phone"]},
                )
            )
        if w.replaces and number:
            commit.message_updates.append(
                UpdateOne({"_id": w.replaces}, {"$set": {"request_number": number, "text": inbound.text}})
            )

        if step.remember_address is not None and step.remember_address.has_house:
            if contact.get("_new"):
                contact["address"] = address_doc(step.remember_address)
            else:
                commit.contacts.append(
                    UpdateOne({"_id": contact["_id"]}, {"$set": {"address": address_doc(step.remember_address)}})
                )
        if contact.pop("_new", False):
            commit.new_contacts.append(contact)

        classification = step.classification.as_dict() if step.classification else None
        if step.action != "edit":
            commit.messages.append(
                inbound_doc(
                    inbound,
                    conversation_id=conv["_id"],
                    contact_id=contact["_id"],
                    request_number=number,
                    classification=classification,
                    review_due_at=inbound.received_at + self.policy.review,
                    needs_review=inbound.kind != "callback",
                )
            )
            outcome.events.append(
                Event(
                    type="message.in",
                    conversation_id=conv["_id"],
                    request_number=number,
                    message_id=inbound.id,
                    data={
                        "channel": inbound.channel,
                        "preview": inbound.text[:200],
                        "kind": inbound.kind,
                        "emergency": bool(w.request and w.request.get("emergency")),
                        "registered": w.number if w.request is not None else None,
                        "replies": len(step.replies),
                    },
                )
            )

        replies = list(step.replies) if inbound.answerable and not inbound.auto_submitted else []
        for index, reply in enumerate(replies):
            outbound = self._render(w, reply, index, number, now)
            commit.messages.append(outbound_doc(outbound, contact_id=contact["_id"]))
            outcome.outbounds.append(outbound)
        self._conversation_update(w, number, now, commit)

    def _render(self, w: _Work, reply: Any, index: int, number: str | None, now: datetime) -> Outbound:
        inbound = w.inbound
        context = dict(reply.context)
        deadline = None
        request = w.request if w.request is not None and reply.template == "registered" else None
        template = reply.template
        if request is not None:
            context = {**self.texts.request_context(request), **context}
            deadline = request.get("deadline")
            if w.incident is not None:
                template = "incident_joined"
                context["master"] = w.incident["master"]
        elif reply.template == "status" and w.looked_up is not None:
            context = {**context, **self.texts.request_context(w.looked_up)}
        text = self.texts.render(template, inbound.channel, **context)
        buttons = reply.buttons
        if request is not None and not buttons:
            buttons = status_buttons(request["_id"])
        suffix = "reply" if index == 0 else f"reply{index + 1}"
        return Outbound(
            id=f"{inbound.id}#{suffix}",
            channel=inbound.channel,
            address=inbound.address,
            text=text,
            kind=reply.kind,  # type: ignore[arg-type]
            buttons=[list(row) for row in buttons],
            conversation_id=w.conversation["_id"],
            request_number=number,
            deadline=deadline,
            in_reply_to=inbound.id,
            subject=reply_subject(inbound.subject, number),
            thread=reply_thread(inbound),
            author="hub",
            created_at=now,
        )

    def _record_edit(
        self,
        inbound: Inbound,
        original: dict[str, Any] | None,
        request: dict[str, Any] | None,
        now: datetime,
        commit: Commit,
        outcome: Outcome,
    ) -> None:
        """An edit (or a late voicemail transcript) updates the stored text and the request's text history,
        and re-classifies a request the hub classified; it never makes a new request."""
        if original is None:
            return
        commit.message_updates.append(
            UpdateOne(
                {"_id": original["_id"]},
                {
                    "$set": {"text": inbound.text},
                    "$push": {
                        "edits": {"at": inbound.received_at, "previous": original.get("text"), "edit_id": inbound.id}
                    },
                },
            )
        )
        number = original.get("request_number")
        if number and request is not None and request.get("source_message_id") == original["_id"]:
            fields: dict[str, Any] = {"text": inbound.text, "updated_at": now}
            changes: dict[str, Any] = {"text": [original.get("text"), inbound.text]}
            if request.get("classified_by") == "hub":
                fields.update(reclassified(request, inbound.text, self.policy))
                if fields.get("category", request.get("category")) != request.get("category"):
                    changes["category"] = [request.get("category"), fields["category"]]
            commit.request_updates.append(
                UpdateOne(
                    {"_id": number},
                    {
                        "$set": fields,
                        "$push": {
                            "text_history": {
                                "at": inbound.received_at,
                                "text": original.get("text"),
                                "message_id": original["_id"],
                            }
                        },
                    },
                )
            )
            commit.audits.append(
                audit_entry(
                    number,
                    f"resident:{original.get('contact_id')}",
                    "edited",
                    changes,
                    source=inbound.channel,
                    message_id=inbound.id,
                    at=now,
                    entry_id=f"{inbound.id}#edited",
                )
            )
        outcome.events.append(
            Event(
                type="message.edited",
                conversation_id=original.get("conversation_id"),
                request_number=number,
                message_id=original["_id"],
                data={"text": inbound.text[:200]},
            )
        )

    @staticmethod
    def _unregistered_edit(inbound: Inbound, seen: dict[str, dict[str, Any]]) -> Inbound:
        """An edit of a message that never became a request is planned as a message of its own."""
        if inbound.kind != "edit" or not inbound.edit_of:
            return inbound
        original = seen.get(inbound.edit_of)
        if original is None or original.get("request_number"):
            return inbound
        kind = original.get("kind") if original.get("kind") in ("message", "voicemail") else "message"
        payload = {**inbound.payload, "replaces": original["_id"]}
        return inbound.model_copy(update={"kind": kind, "edit_of": None, "payload": payload})

    def _callback_task(
        self, inbound: Inbound, contact: dict[str, Any], conv: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        due = inbound.received_at + self.policy.callback
        return {
            "_id": inbound.id,
            "kind": "callback",
            "phone": inbound.sender.phone or inbound.sender.id,
            "name": inbound.sender.name,
            "contact_id": contact["_id"],
            "conversation_id": conv["_id"],
            "missed_at": inbound.received_at,
            "due_at": due,
            "status": "open",
            "done_at": None,
            "by": None,
            "met": None,
            "created_at": now,
        }

    def _conversation_update(self, w: _Work, number: str | None, now: datetime, commit: Commit) -> None:
        """Record the conversation's new state: inserted whole when new, one update otherwise."""
        inbound, conv, step = w.inbound, w.conversation, w.step
        assert step is not None
        state = step.state
        if state.awaiting == "address_for" and state.number is None and w.number:
            state = State("address_for", number=w.number)
        fields: dict[str, Any] = {
            "last_message_at": inbound.received_at,
            "last_inbound_at": inbound.received_at,
            "preview": (inbound.text or _attachment_preview(inbound))[:200],
            "contact_id": w.contact["_id"],
            "state": state.as_dict(),
            "title": w.contact.get("name") or inbound.sender.name or inbound.sender.phone or inbound.address,
        }
        if conv.get("waiting_since") is None and not inbound.auto_submitted:
            fields["waiting_since"] = inbound.received_at
        if w.request is not None and w.number:
            fields["active_request"] = w.number
            fields["last_request"] = w.number
            fields["emergency"] = bool(w.request.get("emergency"))
            fields["category"] = w.request.get("category")
        fields["replay"] = {"message_id": inbound.id, **{k: conv.get(k) for k in _REPLAYED}}
        inc = {"unread": 1, "messages": 1 + len(step.replies)}
        change: dict[str, Any] = {"$set": fields}
        if not w.replayed:
            change["$inc"] = inc
        update = UpdateOne({"_id": conv["_id"]}, change)
        if conv.pop("_new", False):
            doc = {**conv, **fields, "unread": inc["unread"], "messages": inc["messages"]}
            commit.new_conversations.append((doc, update))
            return
        commit.conversations.append(update)

    # -- contacts and conversations -------------------------------------------

    async def _contacts(self, inbounds: Sequence[Inbound]) -> dict[str, dict[str, Any]]:
        """Who wrote each message: one person may have Telegram, VK, email and phone identities."""
        claims = {m.id: _identity_claims(m) for m in inbounds}
        for _attempt in range(3):
            keys = {k for c in claims.values() for k in c["identities"]}
            docs = await self.journal.contacts_by_identity(keys)
            by_key = {k: d for d in docs for k in d.get("identities", [])}
            result: dict[str, dict[str, Any]] = {}
            new_docs: dict[str, dict[str, Any]] = {}
            for inbound in inbounds:
                claim = claims[inbound.id]
                matched = {by_key[k]["_id"]: by_key[k] for k in claim["identities"] if k in by_key}
                if not matched:
                    primary = claim["identities"][0]
                    doc = new_docs.get(primary)
                    if doc is None:
                        doc = _new_contact(claim, inbound)
                        for key in claim["identities"]:
                            new_docs.setdefault(key, doc)
                    result[inbound.id] = doc
                    continue
                ordered = sorted(matched.values(), key=lambda d: d.get("created_at") or inbound.received_at)
                keep = ordered[0]
                if len(ordered) > 1:
                    merged = [d["_id"] for d in ordered[1:]]
                    log.info("merging contacts %s into %s", merged, keep["_id"], extra={"message_id": inbound.id})
                    await self.journal.merge_contacts(keep["_id"], merged, claim["identities"])
                    return await self._contacts(inbounds)
                missing = [k for k in claim["identities"] if k not in keep.get("identities", [])]
                if missing or (claim["name"] and not keep.get("name")):
                    await self.journal.add_identities(
                        keep["_id"],
                        missing,
                        claim["phones"],
                        claim["emails"],
                        claim["name"] if not keep.get("name") else None,
                    )
                    keep = {
                        **keep,
                        "identities": [*keep.get("identities", []), *missing],
                        "phones": sorted({*keep.get("phones", []), *claim["phones"]}),
                    }
                result[inbound.id] = keep
            for doc in new_docs.values():
                doc["_new"] = True
            return result
        raise RuntimeError("could not resolve contacts")

    @staticmethod
    def _conversations(
        inbounds: Sequence[Inbound], contacts: dict[str, dict[str, Any]], found: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Each message's conversation: the stored one, or a new one to be inserted with the batch."""
        for m in inbounds:
            if m.conversation_key in found:
                continue
            doc = {
                "_id": m.conversation_key,
                "channel": m.channel,
                "address": m.address,
                "contact_id": contacts[m.id]["_id"],
                "created_at": m.received_at,
                "state": None,
                "active_request": None,
                "last_request": None,
                "unread": 0,
                "messages": 0,
                "emergency": False,
                "waiting_since": None,
                "last_message_at": m.received_at,
                "title": m.sender.name,
            }
            doc["_new"] = True
            found[m.conversation_key] = doc
        return found


_REPLAYED = ("state", "active_request", "last_request", "waiting_since", "emergency", "category")
"""What a message changes in its conversation, kept as it was before, for a redelivery to plan from."""


def _replay(w: _Work) -> None:
    """A conversation updated by an attempt that died before recording the message shows the message's
    own effects (its request as the active one); plan the redelivery from the state before them."""
    replay = w.conversation.get("replay") or {}
    if replay.get("message_id") != w.inbound.id:
        return
    w.conversation = {**w.conversation, **{k: replay.get(k) for k in _REPLAYED}}
    w.replayed = True


def reclassified(request: dict[str, Any], text: str, policy: DeadlinePolicy) -> dict[str, Any]:
    """Category, flags and clocks of a request after its text changed; met clocks keep their record."""
    result = classify(text)
    if result.category.value == request.get("category"):
        return {"confidence": result.confidence, "phrases": list(result.phrases)}
    registered = request["registered_at"]
    clocks = clocks_doc(result.category.value, registered, request.get("received_at") or registered, policy)
    for name, old in (request.get("clocks") or {}).items():
        if name in clocks and old.get("done_at") is not None:
            clocks[name].update({k: old.get(k) for k in ("done_at", "met", "by")})
    notify = info(result.category).notify_municipality
    return {
        "category": result.category.value,
        "emergency": result.emergency,
        "confidence": result.confidence,
        "phrases": list(result.phrases),
        "clocks": clocks,
        "deadline": planned_deadline(regulatory_clocks(result.category, registered, policy)),
        "next_due_at": next_due(clocks),
        "municipal_notice": {"required": notify, "status": "pending" if notify else None, "sent_at": None},
    }


def _identity_claims(inbound: Inbound) -> dict[str, Any]:
    phones = []
    if inbound.sender.phone:
        phone = normalize_phone(inbound.sender.phone)
        if phone:
            phones.append(phone)
    if inbound.text and inbound.kind in ("message", "voicemail", "command"):
        phones.extend(p for p in extract_phones(inbound.text) if p not in phones)
    emails = [inbound.sender.email.lower()] if inbound.sender.email else []
    identities = [inbound.identity, *(f"phone:{p}" for p in phones), *(f"email:{e}" for e in emails)]
    return {
        "identities": list(dict.fromkeys(identities)),
        "phones": phones,
        "emails": emails,
        "name": inbound.sender.name,
    }


def _new_contact(claim: dict[str, Any], inbound: Inbound) -> dict[str, Any]:
    return {
        "_id": uuid.uuid4().hex,
        "name": claim["name"],
        "identities": claim["identities"],
        "phones": claim["phones"],
        "emails": claim["emails"],
        "address": None,
        "created_at": inbound.received_at,
        "updated_at": inbound.received_at,
    }


def _incident(number: str, key: str, kind: str, request: dict[str, Any], opened_at: datetime) -> dict[str, Any]:
    """An incident opened by the request ``number``, its master."""
    return {
        "_id": number,
        "open_key": key,
        "kind": kind,
        "status": "open",
        "master": number,
        "building_key": request["address"]["key"],
        "address": request["address"].get("text"),
        "category": request["category"],
        "opened_at": opened_at,
    }


def _attachment_preview(inbound: Inbound) -> str:
    if inbound.location is not None:
        return "📍 местоположение"
    if inbound.attachments:
        kinds = {"photo": "фото", "voice": "голосовое сообщение", "document": "документ"}
        return "📎 " + ", ".join(kinds.get(a.kind, a.kind) for a in inbound.attachments)
    return ""


def _summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        loc = ".".join(str(p) for p in error["loc"]) or "message"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)
