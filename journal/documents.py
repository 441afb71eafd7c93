"""The shapes of the journal's documents, in one place, and the pure builders of the new ones.

Every collection's document is a ``TypedDict`` here; the journal's methods take and
return these, so a field's name and type are written once. Builders take the
router's decisions (a draft of a request, an inbound message, a reply) and shape
what gets written; they do no I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Required, TypedDict

from adshub.contract import Inbound, Outbound
from bots.dialogue import Draft
from domain.address import Address, building_key
from domain.categories import info
from domain.deadlines import Clock, DeadlinePolicy, planned_deadline, regulatory_clocks


class AddressDoc(TypedDict, total=False):
    street: str | None
    street_type: str | None
    house: str | None
    building: str | None
    structure: str | None
    entrance: str | None
    floor: str | None
    flat: str | None
    text: str
    key: str | None


class ClockDoc(TypedDict, total=False):
    """One regulatory clock of a request: when it is due, whether and when it was met."""

    label: str
    due_at: datetime
    basis: str
    done_at: datetime | None
    met: bool | None
    warned_at: datetime | None
    breached_at: datetime | None
    by: str | None


class ContactDoc(TypedDict, total=False):
    """One person, whatever channels they write from: identities are ``telegram:123``, ``phone:+7…``."""

    _id: Required[str]
    name: str | None
    identities: list[str]
    phones: list[str]
    emails: list[str]
    address: AddressDoc | None
    created_at: datetime
    updated_at: datetime
    merged_from: list[str]


class ConversationDoc(TypedDict, total=False):
    """One chat, mailbox thread or phone line of a person; ``_id`` is ``<channel>:<address>``."""

    _id: Required[str]
    channel: str
    address: str
    contact_id: str
    created_at: datetime
    state: dict[str, Any] | None
    """What the dialogue waits for (``bots.dialogue.State``)."""
    active_request: str | None
    last_request: str | None
    unread: int
    applied_messages: list[str]
    messages: int
    emergency: bool
    category: str | None
    waiting_since: datetime | None
    last_message_at: datetime
    last_inbound_at: datetime
    title: str | None
    preview: str
    replay: dict[str, Any]
    """The conversation as it was before the last message, for a redelivery of that message to plan from."""
    taken: dict[str, Any] | None
    """The dispatcher working it (``login``, ``name``, ``at``), or None."""


class ConversationFields(TypedDict, total=False):
    """What a message changes in its conversation."""

    last_message_at: datetime
    last_inbound_at: datetime
    preview: str
    contact_id: str
    state: dict[str, Any] | None
    title: str | None
    waiting_since: datetime | None
    active_request: str | None
    last_request: str | None
    emergency: bool
    category: str | None
    replay: dict[str, Any]


class ReviewDoc(TypedDict, total=False):
    due_at: datetime
    done_at: datetime | None
    by: str | None
    met: bool


class DeliveryState(TypedDict, total=False):
    status: str
    attempts: int
    error: str | None
    sent_at: datetime | None
    report: DeliveryReportDoc
    """What the gateway later said of it (SMS): read beside the message for the page, never stored in it."""


class MessageDoc(TypedDict, total=False):
    """A message in either direction: ``in`` from a resident, ``out`` from the hub or a dispatcher."""

    _id: Required[str]
    direction: Literal["in", "out"]
    kind: str
    conversation_id: str | None
    contact_id: str | None
    channel: str
    address: str
    sender: dict[str, Any]
    text: str
    attachments: list[dict[str, Any]]
    location: dict[str, Any] | None
    at: datetime
    request_number: str | None
    classification: dict[str, Any] | None
    subject: str | None
    external_ref: str | None
    thread: list[str]
    auto_submitted: bool
    payload: dict[str, Any]
    edits: list[dict[str, Any]]
    review: ReviewDoc | None
    raw: Any
    buttons: list[list[dict[str, Any]]]
    in_reply_to: str | None
    author: str | None
    delivery: DeliveryState
    outbound: dict[str, Any]
    to_staff: str | None
    note: bool


class SurveyDoc(TypedDict, total=False):
    rating: int | None
    comment: str | None
    rated_at: datetime | None
    asked_at: datetime | None


class MunicipalNoticeDoc(TypedDict, total=False):
    required: bool
    status: str | None
    sent_at: datetime | None
    by: str | None
    address: str | None
    text: str | None
    way: str | None


OPEN_STATUSES = ("registered", "accepted", "in_work", "localized")
"""A request's statuses before it is done or cancelled: what lists of open requests ask the status index for."""


class RequestDoc(TypedDict, total=False):
    """A registered request: the record the housing inspection reads."""

    _id: Required[str]
    number: str
    year: int
    seq: int
    source_message_id: str
    message_ids: list[str]
    registered_at: datetime
    received_at: datetime
    channel: str
    conversation_id: str
    contact_id: str
    contact: dict[str, Any]
    address: AddressDoc | None
    location: dict[str, Any] | None
    text: str
    text_history: list[dict[str, Any]]
    category: str
    emergency: bool
    confidence: float
    phrases: list[str]
    decided_by: str
    """Which half of the classifier decided: ``rules``, ``model`` or ``rules+model``."""
    classified_by: str
    status: str
    clocks: dict[str, ClockDoc]
    next_due_at: datetime | None
    breached: bool
    """Set once any clock of the request was missed: what the journal's «сроки нарушены» filter finds."""
    deadline: datetime | None
    executor: dict[str, Any] | None
    visit: dict[str, Any] | None
    paid: dict[str, Any]
    """Paid works: the agreed items from the price list (``items``: name, unit, qty, price, sum), ``total``,
    who agreed it and when; what the act of completed works lists."""
    crew: dict[str, datetime]
    """When the executor reported each step from the crew app (accepted, on_way, on_site, localized, done)."""
    notes: list[dict[str, Any]]
    result: dict[str, Any] | None
    closed_at: datetime | None
    survey: SurveyDoc
    municipal_notice: MunicipalNoticeDoc
    attachments: list[dict[str, Any]]
    follow_ups: int
    applied_messages: list[str]
    incident_id: str | None
    updated_at: datetime


class AuditDoc(TypedDict, total=False):
    """Who changed what in a request, when and from where."""

    _id: Required[str]
    request: str
    at: datetime
    actor: str
    action: str
    changes: dict[str, Any]
    source: str
    message_id: str | None


class TaskDoc(TypedDict, total=False):
    """A callback due to a caller (a missed call, a voicemail)."""

    _id: Required[str]
    kind: str
    phone: str
    name: str | None
    contact_id: str
    conversation_id: str
    request_number: str | None
    missed_at: datetime
    due_at: datetime
    status: str
    done_at: datetime | None
    by: str | None
    met: bool | None
    note: str
    alerted: str
    created_at: datetime


class IncidentDoc(TypedDict, total=False):
    """Reports of one accident at one building; its ``_id`` is its master request's number."""

    _id: Required[str]
    open_key: str
    kind: str
    status: str
    master: str
    building_key: str | None
    address: str | None
    category: str
    opened_at: datetime
    closed_at: datetime


class DeliveryDoc(TypedDict, total=False):
    _id: Required[str]
    status: str
    at: datetime
    error: str | None
    channel: str
    request_number: str | None


class DeliveryReportDoc(TypedDict, total=False):
    """A gateway's account of one sent message: its id there, what it cost and whether it reached the handset."""

    _id: Required[str]
    channel: str
    gateway_id: str
    address: str
    parts: int
    cost: float | None
    state: str
    """``accepted`` by the gateway, ``delivered`` to the handset, ``failed``."""
    state_text: str
    final: bool
    request_number: str | None
    sent_at: datetime
    updated_at: datetime


class StaffDoc(TypedDict, total=False):
    """An employee or contractor who can be sent to a request; channel addresses by channel name."""

    _id: Required[str]
    name: str
    trade: str
    kind: str
    phone: str
    email: str | None
    telegram: str | None
    active: bool
    created_at: datetime
    hours: dict[str, list[list[str]]]
    """Working intervals by weekday ("0" is Monday): ``{"0": [["08:00", "17:00"]]}``."""
    absences: list[dict[str, Any]]
    """Leave, sick days, days off and extra shifts: ``{"first", "last", "kind", "hours"}``."""
    buildings: list[str]
    """Building keys the executor serves; empty serves every building."""
    crew_key: str | None
    """SHA-256 of the personal link's secret to the crew app; the link itself is shown once."""
    links: list[str]
    """Chats the executor linked to the bot (``telegram:<chat id>``): the router hands their messages to the
    crew queue instead of registering them."""
    telegram_code: str
    telegram_code_until: datetime
    crew_chat: dict[str, Any]
    """Where the executor is in closing a request through the bot (the request, what was done, photos)."""


class BookingDoc(TypedDict, total=False):
    """An executor's time taken for a request: the visit the resident is told about."""

    _id: Required[str]
    staff_id: str
    staff_name: str
    request_number: str
    start: datetime
    end: datetime
    reason: str
    status: str
    """``booked`` or ``cancelled``."""
    by: str
    at: datetime
    cancelled_at: datetime
    cancelled_by: str


class BuildingDoc(TypedDict, total=False):
    _id: Required[str]
    key: str
    street: str
    street_type: str | None
    house: str
    building: str | None
    structure: str | None
    text: str
    street_key: str
    entrances: int
    floors: int
    flats: int
    fias: str
    note: str


class UserDoc(TypedDict, total=False):
    """A dispatcher, manager or admin of the inbox; ``_id`` is the login."""

    _id: Required[str]
    login: str
    password_hash: str
    role: str
    name: str
    disabled: bool
    created_at: datetime


class SessionDoc(TypedDict, total=False):
    """A signed-in browser: ``_id`` is the SHA-256 of the cookie's token, never the token."""

    _id: Required[str]
    login: str
    role: str
    name: str
    csrf: str
    created_at: datetime
    expires_at: datetime
    ip: str | None


class DeadLetterDoc(TypedDict, total=False):
    _id: Required[str]
    message_id: str | None
    reason: str
    source: str
    body: str
    headers: dict[str, str]
    at: datetime
    resolved: bool


class CorrectionDoc(TypedDict, total=False):
    """A dispatcher's correction of a category: a labeled example for the classifier."""

    _id: Required[str]
    request: str
    text: str | None
    category: str
    emergency: bool
    previous: dict[str, Any]
    by: str
    at: datetime


class StaffNoteDoc(TypedDict, total=False):
    """A note for staff only: in a conversation's thread (``conversation_id``) or for the next shift
    (``shift``). Kept apart from messages so that nothing that reads messages can ever send one."""

    _id: Required[str]
    conversation_id: str | None
    request_number: str | None
    shift: bool
    text: str
    by: str
    by_name: str
    at: datetime


class CannedReplyDoc(TypedDict, total=False):
    """A reply a dispatcher picks instead of typing; ``{номер}``, ``{срок}``, ``{адрес}`` … are filled in."""

    _id: Required[str]
    title: str
    text: str
    created_by: str
    created_at: datetime


class PersonEventDoc(TypedDict, total=False):
    """Who changed a person's card (or merged two), when and how."""

    _id: Required[str]
    contact: str
    at: datetime
    actor: str
    action: str
    changes: dict[str, Any]


class PresenceDoc(TypedDict, total=False):
    """A dispatcher with the inbox open: refreshed while their page listens, gone a minute after."""

    _id: Required[str]
    name: str
    role: str
    at: datetime


# -- builders ------------------------------------------------------------------------


def address_doc(address: Address | None) -> AddressDoc | None:
    if address is None:
        return None
    return {
        "street": address.street,
        "street_type": address.street_type,
        "house": address.house,
        "building": address.building,
        "structure": address.structure,
        "entrance": address.entrance,
        "floor": address.floor,
        "flat": address.flat,
        "text": address.text(),
        "key": building_key(address),
    }


def address_of(doc: AddressDoc | dict[str, Any] | None) -> Address | None:
    """The domain address of a stored one."""
    return Address.from_dict({k: v for k, v in (doc or {}).items() if k not in ("text", "key")})


def clock_entries(clocks: list[Clock]) -> dict[str, ClockDoc]:
    return {
        c.name: {
            "label": c.label,
            "due_at": c.due_at,
            "basis": c.basis,
            "done_at": None,
            "met": None,
            "warned_at": None,
            "by": None,
        }
        for c in clocks
    }


def clocks_doc(
    category: str, registered_at: datetime, received_at: datetime, policy: DeadlinePolicy, electronic: bool = True
) -> dict[str, ClockDoc]:
    return clock_entries(
        regulatory_clocks(category, registered_at, policy, received_at=received_at, electronic=electronic)
    )


def municipal_notice(category: str) -> MunicipalNoticeDoc:
    notify = info(category).notify_municipality
    return {"required": notify, "status": "pending" if notify else None, "sent_at": None}


def request_doc(
    *,
    number: str,
    year: int,
    seq: int,
    draft: Draft,
    inbound: Inbound,
    contact: ContactDoc,
    conversation_id: str,
    registered_at: datetime,
    policy: DeadlinePolicy,
) -> RequestDoc:
    c = draft.classification
    category = c.category.value
    clocks = regulatory_clocks(category, registered_at, policy, received_at=draft.received_at, electronic=True)
    due = [clock.due_at for clock in clocks]
    return {
        "_id": number,
        "number": number,
        "year": year,
        "seq": seq,
        "source_message_id": draft.source_message_id,
        "message_ids": list(draft.message_ids),
        "registered_at": registered_at,
        "received_at": draft.received_at,
        "channel": inbound.channel,
        "conversation_id": conversation_id,
        "contact_id": contact["_id"],
        "contact": {
            "name": contact.get("name"),
            "phone": next(iter(contact.get("phones") or []), None),
            "email": next(iter(contact.get("emails") or []), None),
        },
        "address": address_doc(draft.address),
        "location": inbound.location.model_dump() if inbound.location else None,
        "text": draft.text,
        "text_history": [],
        "category": category,
        "emergency": c.emergency,
        "confidence": c.confidence,
        "phrases": list(c.phrases),
        "decided_by": c.decided_by,
        "classified_by": "hub",
        "status": "registered",
        "clocks": clock_entries(clocks),
        "next_due_at": min(due) if due else None,
        "deadline": planned_deadline(clocks),
        "executor": None,
        "visit": None,
        "notes": [],
        "result": None,
        "closed_at": None,
        "survey": {"rating": None, "comment": None, "rated_at": None, "asked_at": None},
        "municipal_notice": municipal_notice(category),
        "attachments": [a.model_dump() for a in inbound.attachments],
        "updated_at": registered_at,
    }


def inbound_doc(
    inbound: Inbound,
    *,
    conversation_id: str,
    contact_id: str | None,
    request_number: str | None,
    classification: dict[str, Any] | None,
    review_due_at: datetime,
    needs_review: bool = True,
) -> MessageDoc:
    return {
        "_id": inbound.id,
        "direction": "in",
        "kind": inbound.kind,
        "conversation_id": conversation_id,
        "contact_id": contact_id,
        "channel": inbound.channel,
        "address": inbound.address,
        "sender": inbound.sender.model_dump(),
        "text": inbound.text,
        "attachments": [a.model_dump() for a in inbound.attachments],
        "location": inbound.location.model_dump() if inbound.location else None,
        "at": inbound.received_at,
        "request_number": request_number,
        "classification": classification,
        "subject": inbound.subject,
        "external_ref": inbound.external_ref,
        "thread": inbound.thread,
        "auto_submitted": inbound.auto_submitted,
        "payload": inbound.payload,
        "edits": [],
        "review": {"due_at": review_due_at, "done_at": None, "by": None} if needs_review else None,
        "raw": inbound.raw,
    }


def outbound_doc(
    outbound: Outbound, *, contact_id: str | None, status: str = "pending", to_staff: str | None = None
) -> MessageDoc:
    doc: MessageDoc = {
        "_id": outbound.id,
        "direction": "out",
        "kind": outbound.kind,
        "conversation_id": outbound.conversation_id,
        "contact_id": contact_id,
        "channel": outbound.channel,
        "address": outbound.address,
        "text": outbound.text,
        "buttons": [[b.model_dump() for b in row] for row in outbound.buttons],
        "request_number": outbound.request_number,
        "in_reply_to": outbound.in_reply_to,
        "at": outbound.created_at,
        "author": outbound.author,
        "delivery": {"status": status, "attempts": 0, "error": None, "sent_at": None},
        "outbound": outbound.model_dump(mode="json"),
    }
    if to_staff is not None:
        doc["to_staff"] = to_staff
    return doc


def incident_doc(number: str, key: str, kind: str, request: RequestDoc, opened_at: datetime) -> IncidentDoc:
    """An incident opened by the request ``number``, its master."""
    address = request.get("address") or {}
    return {
        "_id": number,
        "open_key": key,
        "kind": kind,
        "status": "open",
        "master": number,
        "building_key": address.get("key"),
        "address": address.get("text"),
        "category": request["category"],
        "opened_at": opened_at,
    }
