"""The message contract every part relies on: ``Inbound``, ``Outbound`` and ``Event``.

These travel as JSON on the bus. Ids are deterministic so that a redelivered
message is recognised as the same message: ``<channel>:<external id>`` for
inbound, ``<inbound id>#<purpose>`` (or another stable string) for outbound.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_TEXT = 20_000

InboundKind = Literal[
    "message",  # an ordinary message with text and/or attachments
    "edit",  # a correction of an earlier message (edit_of)
    "command",  # /start, /status … (payload["command"], payload["args"])
    "callback",  # an inline button pressed (payload["data"])
    "voicemail",  # a recorded message with its transcript as text
    "missed_call",  # a call nobody answered; a callback is due
]

OutboundKind = Literal["registration", "reply", "question", "dispatcher", "notice", "survey", "status"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a time zone")
    return value.astimezone(UTC)


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["photo", "voice", "audio", "video", "document", "other"]
    name: str | None = None
    mime: str | None = None
    size: int | None = Field(default=None, ge=0)
    location: str | None = None
    """Where the bytes are: ``gridfs:<id>``, a file path, or the channel's file reference."""
    meta: dict[str, Any] = Field(default_factory=dict)


class GeoPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    accuracy: float | None = None
    title: str | None = None


class Sender(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=320)
    name: str | None = Field(default=None, max_length=300)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=320)


class Inbound(BaseModel):
    """One thing a resident (or their phone system) sent us."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=3, max_length=512)
    channel: str = Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")
    address: str = Field(min_length=1, max_length=512)
    """The channel's chat/thread address to reply to."""
    sender: Sender
    kind: InboundKind = "message"
    text: str = Field(default="", max_length=MAX_TEXT)
    attachments: list[Attachment] = Field(default_factory=list, max_length=50)
    location: GeoPoint | None = None
    received_at: datetime
    edit_of: str | None = None
    subject: str | None = Field(default=None, max_length=1000)
    external_ref: str | None = Field(default=None, max_length=1000)
    """The channel's own id for threading replies (an email Message-ID)."""
    thread: list[str] = Field(default_factory=list, max_length=100)
    """External references of earlier messages in the same thread (email References)."""
    auto_submitted: bool = False
    """Machine-generated (RFC 3834): stored and shown, never answered automatically."""
    answerable: bool = True
    """False when the channel has no way back (a voicemail): registered, and a callback task is the way back."""
    payload: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any] | str | None = None

    @field_validator("received_at")
    @classmethod
    def _received_in_utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    @model_validator(mode="after")
    def _id_names_channel(self) -> Inbound:
        if not self.id.startswith(self.channel + ":"):
            raise ValueError("id must start with '<channel>:'")
        if self.kind == "edit" and not self.edit_of:
            raise ValueError("an edit must name the message it edits (edit_of)")
        return self

    @property
    def identity(self) -> str:
        """The sender's identity key on this channel, e.g. ``telegram:12345``."""
        return f"{self.channel}:{self.sender.id}"

    @property
    def conversation_key(self) -> str:
        return f"{self.channel}:{self.address}"


class Button(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=64)
    data: str = Field(min_length=1, max_length=64)


class OutboundFile(BaseModel):
    """A file a dispatcher attached to a reply; the bytes are in the journal under ``ref``."""

    model_config = ConfigDict(extra="forbid")

    ref: str = Field(min_length=8, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    content_type: str = Field(default="application/octet-stream", max_length=200)
    size: int = Field(default=0, ge=0)


class Outbound(BaseModel):
    """One message to a resident on the channel their conversation lives on."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=3, max_length=600)
    channel: str = Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")
    address: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    kind: OutboundKind = "reply"
    buttons: list[list[Button]] = Field(default_factory=list)
    conversation_id: str | None = None
    request_number: str | None = None
    deadline: datetime | None = None
    in_reply_to: str | None = None
    """The inbound message this answers."""
    subject: str | None = None
    thread: list[str] = Field(default_factory=list)
    author: str | None = None
    """``hub`` for automatic replies, a dispatcher's login otherwise."""
    files: list[OutboundFile] = Field(default_factory=list, max_length=10)
    """Attached files, for channels whose profile ``sends_files``."""
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def numeric_id(self) -> int:
        """A stable positive 31-bit integer for APIs that deduplicate by number (VK random_id)."""
        digest = hashlib.sha256(self.id.encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF or 1


class Event(BaseModel):
    """Something the dispatcher inbox should show live."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(pattern=r"^[a-z_]+(\.[a-z_]+)*$")
    at: datetime = Field(default_factory=utcnow)
    conversation_id: str | None = None
    request_number: str | None = None
    message_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class ChannelProfile:
    """What a channel can do, as the rest of the hub needs to know it: nothing outside the channels
    compares a channel's name, it asks its profile."""

    name: str
    title: str
    """What dispatchers and the exported journal call it («Чат на сайте»)."""
    can_reply: bool = True
    """A message that came on it can be answered on it (a voicemail cannot: the way back is a callback)."""
    threads_by_subject: bool = False
    """Replies carry a subject that keeps them in the resident's thread (mail)."""
    executor_address: str = ""
    """What the staff directory asks for to notify an executor on this channel («Telegram chat id»); the
    address is kept under the channel's name. Empty: the channel does not notify executors."""
    official_mail: bool = False
    """It sends letters to organisations (the municipal notice of an accident)."""
    local_delivery: bool = False
    """Replies reach residents through connections held by the very process that runs it (web chat): every
    process then receives a copy of each reply for its own connections."""
    sends_files: bool = False
    """A dispatcher's reply on it may carry files."""
    reaches_phones: bool = False
    """It delivers to a phone number (SMS): how residents who only phoned learn their request's number and
    deadline, its ``address`` being the number in E.164."""

    @property
    def notifies_executors(self) -> bool:
        return bool(self.executor_address)
