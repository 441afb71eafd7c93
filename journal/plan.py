"""What one batch of inbound messages changes in the journal, said in domain words.

The router builds a ``Plan`` (register this request, attach that message, rate,
remember an address, open an incident…); ``Journal.commit`` turns it into writes,
in an order that a crash anywhere leaves a prefix the redelivery completes.
Nothing outside the journal speaks MongoDB's update language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from journal.documents import (
    AddressDoc,
    AuditDoc,
    ContactDoc,
    ConversationDoc,
    ConversationFields,
    IncidentDoc,
    MessageDoc,
    RequestDoc,
    TaskDoc,
)


@dataclass(frozen=True)
class ConversationChange:
    """A message moved its conversation on: new fields, and one more message (unless it is a replay)."""

    conversation_id: str
    fields: ConversationFields
    message_id: str = ""
    """The message making the change; an attempt that dies after applying it must not count it twice."""
    unread: int = 1
    messages: int = 1
    counted: bool = True
    """False for a redelivered message whose first attempt already counted it."""
    new: ConversationDoc | None = None
    """The whole conversation when it did not exist; inserted, or the change applied if one appeared meanwhile."""


@dataclass(frozen=True)
class Attach:
    """A follow-up joins an open request: maybe its address, maybe its files."""

    number: str
    at: datetime
    message_id: str
    """The follow-up itself: a redelivery after a crash finds it applied and counts it once."""
    address: AddressDoc | None = None
    attachments: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Rate:
    """The resident's answer to the quality survey: a rating or a comment, only on their own request."""

    number: str
    contact_id: str
    at: datetime
    rating: int | None = None
    comment: str | None = None


@dataclass(frozen=True)
class ReviseText:
    """The resident edited the message a request was registered from (or its transcript came late)."""

    number: str
    at: datetime
    text: str
    previous: str | None
    message_id: str
    received_at: datetime
    reclassified: dict[str, Any] = field(default_factory=dict)
    """Category, clocks and deadline recomputed for the new text, when the hub had classified it."""


@dataclass(frozen=True)
class JoinIncident:
    number: str
    incident_id: str


RequestChange = Attach | Rate | ReviseText | JoinIncident


@dataclass(frozen=True)
class LinkMessages:
    """Earlier messages become part of a request (the question's answer completes it)."""

    message_ids: tuple[str, ...]
    number: str
    text: str | None = None
    """A late transcript that replaces the stored text."""


@dataclass(frozen=True)
class EditMessage:
    message_id: str
    text: str
    previous: str | None
    edit_id: str
    at: datetime


MessageChange = LinkMessages | EditMessage


@dataclass(frozen=True)
class RememberAddress:
    """The address a person gave is kept for their next requests."""

    contact_id: str
    address: AddressDoc


@dataclass
class Plan:
    """Everything one batch writes, in the order ``Journal.commit`` applies it."""

    new_contacts: list[ContactDoc] = field(default_factory=list)
    conversations: list[ConversationChange] = field(default_factory=list)
    registrations: list[RequestDoc] = field(default_factory=list)
    expired_incidents: list[str] = field(default_factory=list)
    opened_incidents: list[IncidentDoc] = field(default_factory=list)
    request_changes: list[RequestChange] = field(default_factory=list)
    contact_changes: list[RememberAddress] = field(default_factory=list)
    message_changes: list[MessageChange] = field(default_factory=list)
    audits: list[AuditDoc] = field(default_factory=list)
    tasks: list[TaskDoc] = field(default_factory=list)
    messages: list[MessageDoc] = field(default_factory=list)
