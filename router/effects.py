"""What each decision of the dialogue does: the journal changes (a ``Plan``), the replies and the events.

One small function per dialogue action; ``record`` applies the one a step asks
for and what every message needs besides (its own record, its conversation,
its replies). Pure: everything written is added to the round's plan, the
router commits it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adshub.contract import Button, Event, Inbound, Outbound
from bots.dialogue import Reply, State, pressed
from bots.texts import Texts
from domain.classify import classify
from domain.clocks import carried_over, next_due
from domain.deadlines import DeadlinePolicy, planned_deadline, regulatory_clocks
from domain.phones import is_mobile, normalize_phone
from domain.schedule import slot_data, slot_label
from journal.documents import (
    AddressDoc,
    ConversationDoc,
    ConversationFields,
    RequestDoc,
    TaskDoc,
    address_doc,
    clocks_doc,
    inbound_doc,
    municipal_notice,
    outbound_doc,
)
from journal.plan import (
    Attach,
    ConversationChange,
    EditMessage,
    LinkMessages,
    Plan,
    Rate,
    RememberAddress,
    ReviseText,
)
from journal.repository import audit_doc
from router.replies import render_reply
from router.situation import REPLAYED, Loaded, Work

log = logging.getLogger("adshub.router")


@dataclass
class Outcome:
    """What a batch sends once it is recorded: replies to residents and events for the inbox."""

    outbounds: list[Outbound] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)


@dataclass
class Round:
    """Everything the effects of one round share."""

    plan: Plan
    outcome: Outcome
    loaded: Loaded
    texts: Texts
    policy: DeadlinePolicy
    now: datetime
    phone_channel: str | None = None

    def audit(
        self,
        w: Work,
        number: str,
        action: str,
        changes: dict[str, Any],
        *,
        actor: str | None = None,
        source: str | None = None,
        at: datetime | None = None,
        suffix: str | None = None,
    ) -> None:
        """The audit entry of what ``w``'s message did to request ``number``; its id is deterministic, so a
        redelivered message writes it once."""
        self.plan.audits.append(
            audit_doc(
                number,
                actor or f"resident:{w.contact['_id']}",
                action,
                changes,
                source=source or w.inbound.channel,
                message_id=w.inbound.id,
                at=at or self.now,
                entry_id=f"{w.inbound.id}#{suffix or action}",
            )
        )


def record(w: Work, r: Round) -> None:
    """Everything one message changes, in the plan and the outcome."""
    step = w.step
    assert step is not None
    number = w.number or step.number
    register(w, r)
    effect = ACTIONS.get(step.action)
    if effect is not None:
        effect(w, r, number)
    if not w.inbound.answerable and step.action in ("register", "attach") and number:
        callback_task(w, r, number)
    if w.replaces and number:
        r.plan.message_changes.append(LinkMessages((w.replaces,), number, text=w.inbound.text))
    remember_address(w, r)
    if w.new_contact:
        r.plan.new_contacts.append(w.contact)
    if step.action != "edit":
        store_message(w, r, number)
    replies(w, r, number)
    conversation_change(w, r)


def register(w: Work, r: Round) -> None:
    """A new (or recovered) registration: the request, its audit entry and the earlier messages it takes."""
    request = w.request
    if request is None or not (w.new_request or w.recovered) or w.number is None:
        return
    if w.new_request:
        r.plan.registrations.append(request)
    r.audit(
        w,
        w.number,
        "registered",
        {
            "category": request["category"],
            "emergency": request["emergency"],
            "address": (request.get("address") or {}).get("text"),
            "channel": w.inbound.channel,
        },
        actor="hub",
        source="router",
        at=request.get("registered_at") or r.now,
    )
    r.outcome.registered.append(w.number)
    log.info(
        "registered request %s: %s%s",
        w.number,
        request["category"],
        " (emergency)" if request["emergency"] else "",
        extra={"message_id": w.inbound.id, "request_number": w.number, "channel": w.inbound.channel},
    )
    earlier = tuple(i for i in request.get("message_ids", []) if i != w.inbound.id)
    if earlier:
        r.plan.message_changes.append(LinkMessages(earlier, w.number))


def attach(w: Work, r: Round, number: str | None) -> None:
    """A follow-up joins its request: maybe the address it lacked, maybe files."""
    step = w.step
    assert step is not None
    if not number:
        return
    address: AddressDoc | None = None
    if step.address is not None:
        address = address_doc(step.address)
        r.audit(w, number, "address", {"address": step.address.text()})
    attachments = tuple(a.model_dump() for a in w.inbound.attachments)
    r.plan.request_changes.append(Attach(number, r.now, w.inbound.id, address=address, attachments=attachments))


def rate(w: Work, r: Round, number: str | None) -> None:
    step = w.step
    assert step is not None
    if number and step.rating:
        r.plan.request_changes.append(Rate(number, w.contact["_id"], r.now, rating=step.rating))
        r.audit(w, number, "survey", {"rating": step.rating})


def comment(w: Work, r: Round, number: str | None) -> None:
    step = w.step
    assert step is not None
    if number and step.comment:
        r.plan.request_changes.append(Rate(number, w.contact["_id"], r.now, comment=step.comment))
        r.audit(w, number, "survey", {"comment": step.comment}, suffix="comment")


def edit(w: Work, r: Round, number: str | None) -> None:
    """An edit (or a late voicemail transcript) updates the stored text and the request's text history,
    and re-classifies a request the hub classified; it never makes a new request."""
    inbound = w.inbound
    original = r.loaded.seen.get(inbound.edit_of or "")
    if original is None:
        return
    r.plan.message_changes.append(
        EditMessage(original["_id"], inbound.text, original.get("text"), inbound.id, inbound.received_at)
    )
    edited = original.get("request_number")
    request = r.loaded.related.get(edited or "")
    if edited and request is not None and request.get("source_message_id") == original["_id"]:
        changes: dict[str, Any] = {"text": [original.get("text"), inbound.text]}
        revised: dict[str, Any] = {}
        if request.get("classified_by") == "hub":
            revised = reclassified(request, inbound.text, r.policy)
            if revised.get("category", request.get("category")) != request.get("category"):
                changes["category"] = [request.get("category"), revised["category"]]
        r.plan.request_changes.append(
            ReviseText(
                edited,
                r.now,
                inbound.text,
                original.get("text"),
                original["_id"],
                inbound.received_at,
                reclassified=revised,
            )
        )
        r.audit(w, edited, "edited", changes, actor=f"resident:{original.get('contact_id')}")
    r.outcome.events.append(
        Event(
            type="message.edited",
            conversation_id=original.get("conversation_id"),
            request_number=edited,
            message_id=original["_id"],
            data={"text": inbound.text[:200]},
        )
    )


def callback_task(w: Work, r: Round, number: str | None) -> None:
    """A missed call, or a voicemail's request: the way back to the caller is a callback in 10 minutes."""
    inbound = w.inbound
    task: TaskDoc = {
        "_id": inbound.id,
        "kind": "callback",
        "phone": inbound.sender.phone or inbound.sender.id,
        "name": inbound.sender.name,
        "contact_id": w.contact["_id"],
        "conversation_id": w.conversation["_id"],
        "missed_at": inbound.received_at,
        "due_at": inbound.received_at + r.policy.callback,
        "status": "open",
        "done_at": None,
        "by": None,
        "met": None,
        "created_at": r.now,
    }
    if number:
        task["request_number"] = number
    r.plan.tasks.append(task)
    r.outcome.events.append(
        Event(
            type="task.callback",
            conversation_id=w.conversation["_id"],
            request_number=number,
            message_id=inbound.id,
            data={"phone": task["phone"]},
        )
    )


ACTIONS: dict[str, Callable[[Work, Round, str | None], None]] = {
    "attach": attach,
    "rate": rate,
    "comment": comment,
    "edit": edit,
    "callback_task": lambda w, r, _number: callback_task(w, r, None),
}


def remember_address(w: Work, r: Round) -> None:
    """The address a person gave is theirs for the next requests (new people get it with their record)."""
    step = w.step
    assert step is not None
    if step.remember_address is None or not step.remember_address.has_house:
        return
    doc = address_doc(step.remember_address)
    assert doc is not None
    if w.new_contact:
        w.contact["address"] = doc
    else:
        r.plan.contact_changes.append(RememberAddress(w.contact["_id"], doc))


def store_message(w: Work, r: Round, number: str | None) -> None:
    step = w.step
    assert step is not None
    inbound = w.inbound
    if inbound.kind == "callback" and not inbound.text.strip():
        inbound = inbound.model_copy(update={"text": pressed(str(inbound.payload.get("data") or ""))})
    r.plan.messages.append(
        inbound_doc(
            inbound,
            conversation_id=w.conversation["_id"],
            contact_id=w.contact["_id"],
            request_number=number,
            classification=step.classification.as_dict() if step.classification else None,
            review_due_at=inbound.received_at + r.policy.review,
            needs_review=inbound.kind != "callback",
        )
    )
    r.outcome.events.append(
        Event(
            type="message.in",
            conversation_id=w.conversation["_id"],
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


def replies(w: Work, r: Round, number: str | None) -> None:
    """The step's replies, rendered for the resident's channel; none for machine mail or a voicemail."""
    step = w.step
    assert step is not None
    if w.inbound.auto_submitted:
        return
    if not w.inbound.answerable:
        phone_notice(w, r, number)
        return
    chosen = (choose_time(w, number, r),) if w.offered and number else ()
    for index, reply in enumerate((*step.replies, *chosen)):
        outbound = render_reply(w, reply, index, number, r.now, r.texts)
        r.plan.messages.append(outbound_doc(outbound, contact_id=w.contact["_id"]))
        r.outcome.outbounds.append(outbound)


def choose_time(w: Work, number: str, r: Round) -> Reply:
    """The visit times the resident may pick, one button each («завтра 10:00»)."""
    buttons = tuple(
        (Button(text=slot_label(o.start, r.now, r.texts.tz), data=slot_data(number, o.start, o.staff_id)),)
        for o in w.offered
    )
    return Reply("choose_time", {"number": number}, buttons=buttons, kind="question")


def phone_notice(w: Work, r: Round, number: str | None) -> None:
    """A caller with no way back on their channel (a voicemail) is told the new request's number, deadline
    and measures by SMS at the number they called from, within the inform clock; the callback stays due."""
    step = w.step
    assert step is not None
    if r.phone_channel is None or w.request is None or not w.new_request or not number:
        return
    phone = normalize_phone(w.inbound.sender.phone or "")
    if phone is None or not is_mobile(phone):
        return
    registered = next((reply for reply in step.replies if reply.template == "registered"), None)
    if registered is None:
        return
    outbound = render_reply(w, registered, 0, number, r.now, r.texts, to=(r.phone_channel, phone))
    r.plan.messages.append(outbound_doc(outbound, contact_id=w.contact["_id"]))
    r.outcome.outbounds.append(outbound)


def conversation_change(w: Work, r: Round) -> None:
    """The conversation's new state: inserted whole when new, one change otherwise."""
    inbound, conv, step = w.inbound, w.conversation, w.step
    assert step is not None
    state = step.state
    if state.awaiting == "address_for" and state.number is None and w.number:
        state = State("address_for", number=w.number)
    button = inbound.kind == "callback"
    fields: ConversationFields = {
        "last_message_at": inbound.received_at,
        "last_inbound_at": inbound.received_at,
        "contact_id": w.contact["_id"],
        "state": state.as_dict(),
        "title": w.contact.get("name") or inbound.sender.name or inbound.sender.phone or inbound.address,
    }
    if not button:
        fields["preview"] = (inbound.text or attachment_preview(inbound))[:200]
    if conv.get("waiting_since") is None and not inbound.auto_submitted and not button:
        fields["waiting_since"] = inbound.received_at
    if w.request is not None and w.number:
        fields["active_request"] = w.number
        fields["last_request"] = w.number
        fields["emergency"] = bool(w.request.get("emergency"))
        fields["category"] = w.request.get("category")
    fields["replay"] = {"message_id": inbound.id, **{k: conv.get(k) for k in REPLAYED}}
    unread, messages = (0 if button else 1), 1 + len(step.replies)
    new: ConversationDoc | None = None
    if w.new_conversation:
        new = {**conv, **fields, "unread": unread, "messages": messages, "applied_messages": [inbound.id]}
    r.plan.conversations.append(
        ConversationChange(
            conv["_id"], fields, inbound.id, unread=unread, messages=messages, counted=not w.replayed, new=new
        )
    )


def reclassified(request: RequestDoc, text: str, policy: DeadlinePolicy) -> dict[str, Any]:
    """Category, flags and clocks of a request after its text changed; met clocks keep their record."""
    result = classify(text)
    if result.category.value == request.get("category"):
        return {"confidence": result.confidence, "phrases": list(result.phrases), "decided_by": result.decided_by}
    registered = request["registered_at"]
    fresh = clocks_doc(result.category.value, registered, request.get("received_at") or registered, policy)
    clocks = carried_over(fresh, request.get("clocks") or {}, keep=("done_at", "met", "by"), decided_only=True)
    return {
        "category": result.category.value,
        "emergency": result.emergency,
        "confidence": result.confidence,
        "phrases": list(result.phrases),
        "decided_by": result.decided_by,
        "clocks": clocks,
        "deadline": planned_deadline(regulatory_clocks(result.category, registered, policy)),
        "next_due_at": next_due(clocks),
        "municipal_notice": municipal_notice(result.category.value),
    }


def attachment_preview(inbound: Inbound) -> str:
    if inbound.location is not None:
        return "📍 местоположение"
    if inbound.attachments:
        kinds = {"photo": "фото", "voice": "голосовое сообщение", "document": "документ"}
        return "📎 " + ", ".join(kinds.get(a.kind, a.kind) for a in inbound.attachments)
    return ""
