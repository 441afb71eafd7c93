"""The inbox list as a dispatcher works it: who wrote, what is open, which clock runs out next, and the
queues that say what to do next. Pure: built from documents the desk has read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.deadlines import CLOCK_LABELS

CLOSED = ("done", "cancelled")
REPLY_LABEL = "Ответить жителю"


def display_name(conversation: Mapping[str, Any], contact: Mapping[str, Any] | None) -> str:
    """What a dispatcher calls the resident: a name, a phone, a mail address, else the channel's word for a
    stranger — never a session id."""
    contact = contact or {}
    if contact.get("name"):
        return str(contact["name"])
    for key in ("phones", "emails"):
        values = contact.get(key) or []
        if values:
            return str(values[0])
    title = str(conversation.get("title") or "")
    address = str(conversation.get("address") or "")
    if title and title != address and not _looks_like_id(title):
        return title
    if conversation.get("channel") in ("voicemail", "email") and address and not _looks_like_id(address):
        return address
    return "Житель без имени"


def _looks_like_id(value: str) -> bool:
    compact = value.replace("-", "")
    return len(compact) >= 16 and all(c in "0123456789abcdef" for c in compact.lower())


@dataclass(frozen=True)
class Due:
    """The nearest clock of a conversation: what must be done by when."""

    at: datetime
    label: str

    def breached(self, now: datetime) -> bool:
        return self.at <= now


def nearest_clock(conversation: Mapping[str, Any], request: Mapping[str, Any] | None, review: timedelta) -> Due | None:
    """The open clock that runs out first: of the open request, or the review of a message that waits."""
    candidates: list[Due] = []
    if request is not None and request.get("status") not in CLOSED:
        for name, clock in (request.get("clocks") or {}).items():
            if clock.get("done_at") is None and clock.get("due_at") is not None:
                candidates.append(Due(clock["due_at"], clock.get("label") or CLOCK_LABELS.get(name, name)))
    waiting = conversation.get("waiting_since")
    if waiting is not None:
        candidates.append(Due(waiting + review, REPLY_LABEL))
    return min(candidates, key=lambda d: d.at) if candidates else None


@dataclass(frozen=True)
class Row:
    """One conversation in the list."""

    conversation: Mapping[str, Any]
    name: str
    request: Mapping[str, Any] | None
    due: Due | None
    taken: Mapping[str, Any] | None

    @property
    def id(self) -> str:
        return str(self.conversation["_id"])

    @property
    def emergency(self) -> bool:
        return bool(self.request and self.request.get("emergency"))

    @property
    def waiting(self) -> bool:
        return self.conversation.get("waiting_since") is not None

    def breached(self, now: datetime) -> bool:
        if self.due is not None and self.due.breached(now):
            return True
        clocks = (self.request or {}).get("clocks") or {}
        return any(c.get("met") is False and c.get("done_at") is None for c in clocks.values())


@dataclass(frozen=True)
class Queue:
    name: str
    title: str
    holds: Callable[[Row, str, datetime], bool]


QUEUES = (
    Queue("all", "Все", lambda row, me, now: True),
    Queue("emergency", "Экстренные", lambda row, me, now: row.emergency),
    Queue("mine", "Мои", lambda row, me, now: (row.taken or {}).get("login") == me),
    Queue(
        "unassigned",
        "Без исполнителя",
        lambda row, me, now: row.request is not None and not row.request.get("executor"),
    ),
    Queue("waiting", "Ждут ответа", lambda row, me, now: row.waiting),
    Queue("overdue", "Просрочено", lambda row, me, now: row.breached(now)),
)
QUEUE_NAMES = {q.name: q for q in QUEUES}


def build_rows(
    conversations: Iterable[Mapping[str, Any]],
    requests: Mapping[str, Mapping[str, Any]],
    contacts: Mapping[str, Mapping[str, Any]],
    review: timedelta,
) -> list[Row]:
    """Rows ordered by the clock that runs out first; conversations with nothing due last, newest first."""
    rows: list[Row] = []
    for conv in conversations:
        request = requests.get(str(conv.get("active_request") or ""))
        if request is not None and request.get("status") in CLOSED:
            request = None
        rows.append(
            Row(
                conversation=conv,
                name=display_name(conv, contacts.get(str(conv.get("contact_id") or ""))),
                request=request,
                due=nearest_clock(conv, request, review),
                taken=conv.get("taken"),
            )
        )

    def key(row: Row) -> tuple[int, float, float]:
        if row.due is not None:
            return (0, row.due.at.timestamp(), 0.0)
        last = row.conversation.get("last_message_at")
        return (1, 0.0, -(last.timestamp() if last else 0.0))

    rows.sort(key=key)
    return rows


def queue_counts(rows: Iterable[Row], me: str, now: datetime) -> dict[str, int]:
    listed = list(rows)
    return {q.name: sum(1 for r in listed if q.holds(r, me, now)) for q in QUEUES}
