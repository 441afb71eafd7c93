"""The inbox list's documents, kept in memory in step with the journal.

The live list reloads on every event, and at a city's scale it holds thousands of open conversations:
reading them, their requests and residents costs the embedded server about half a second each time. The
board reads everything once, then on each look only what changed since: the conversations and requests the
events name (this process's own changes and every router's, through the bus), the conversations with a
message newer than the newest it holds (while it holds none, newer than its first read: a board loaded on an
empty journal still sees the first resident before the bus tells it), and everything again in the
background every ``REFRESH`` seconds for what no event named (a message reviewed in another inbox process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from journal.desk import Desk
from journal.documents import ContactDoc, ConversationDoc, RequestDoc

log = logging.getLogger("adshub.inbox.board")
REFRESH = 60.0
RECENT = 200
INFORM_RECHECK = 15.0
"""Seconds between looks at every listed request's delivery records; in between only the requests an
event named are looked at (a reply delivered names its conversation)."""
CLOCK_SKEW = timedelta(minutes=5)


@dataclass
class Snapshot:
    conversations: dict[str, ConversationDoc] = field(default_factory=dict)
    requests: dict[str, RequestDoc] = field(default_factory=dict)
    contacts: dict[str, ContactDoc] = field(default_factory=dict)
    read_from: datetime = datetime(2000, 1, 1, tzinfo=UTC)


def is_open(conversation: ConversationDoc) -> bool:
    return bool(conversation.get("active_request") or conversation.get("waiting_since"))


class Board:
    def __init__(
        self, desk: Desk, refresh: float = REFRESH, recent: int = RECENT, inform_recheck: float = INFORM_RECHECK
    ) -> None:
        self.desk = desk
        self.inform_recheck = inform_recheck
        self.refresh = refresh
        self.recent = recent
        self._snapshot: Snapshot | None = None
        self._loaded_at = 0.0
        self._conversations: set[str] = set()
        self._requests: set[str] = set()
        self._contacts: set[str] = set()
        self._lock = asyncio.Lock()
        self._reload: asyncio.Task[None] | None = None
        self._inform_dirty: set[str] = set()
        self._inform_all_at = -inform_recheck

    def changed(
        self, conversation_id: str | None = None, request_number: str | None = None, contact_id: str | None = None
    ) -> None:
        """Something named changed in the journal: read it again on the next look."""
        if conversation_id:
            self._conversations.add(conversation_id)
        if request_number:
            self._requests.add(request_number)
        if contact_id:
            self._contacts.add(contact_id)

    def noted(self, event: Mapping[str, Any]) -> None:
        """An event of the bus (a dict as it travels): what it names changed (a delivery names the
        conversations whose replies went out)."""
        data = event.get("data") if isinstance(event.get("data"), Mapping) else {}
        self.changed(
            _text(event.get("conversation_id")), _text(event.get("request_number")), _text((data or {}).get("contact"))
        )
        delivered = (data or {}).get("conversations")
        if isinstance(delivered, list):
            for conversation_id in delivered:
                self.changed(_text(conversation_id))

    async def snapshot(self) -> Snapshot:
        """The open conversations and the latest others, with their active requests and residents."""
        async with self._lock:
            if self._snapshot is None:
                self._snapshot = await self._load()
                self._loaded_at = time.monotonic()
            elif time.monotonic() - self._loaded_at > self.refresh and self._reload is None:
                self._reload = asyncio.create_task(self._reload_in_background(), name="inbox-board-reload")
            await self._catch_up(self._snapshot)
            await self._resolve_inform(self._snapshot)
            return self._snapshot

    async def close(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload

    async def _load(self) -> Snapshot:
        started = datetime.now(UTC) - CLOCK_SKEW
        conversations = await self.desk.inbox_conversations(recent=self.recent)
        requests = await self.desk.requests_of(c.get("active_request") for c in conversations)
        contacts = await self.desk.contacts_by_id(c.get("contact_id") for c in conversations)
        return Snapshot({c["_id"]: c for c in conversations}, requests, contacts, started)

    async def _reload_in_background(self) -> None:
        try:
            fresh = await self._load()
            async with self._lock:
                self._snapshot, self._loaded_at = fresh, time.monotonic()
                self._inform_all_at = -self.inform_recheck
        except Exception as exc:
            log.warning("inbox list not reloaded (%s); it keeps what it holds", exc)
            self._loaded_at = time.monotonic()
        finally:
            self._reload = None

    async def _resolve_inform(self, board: Snapshot) -> None:
        """Complete the inform clocks of listed requests from the delivery records, in memory: every listed
        request every ``INFORM_RECHECK`` seconds, in between only those read again or named by an event.
        (Each look at all of them costs a query per hundred requests, and the live list reloads on every
        event.)"""
        now = time.monotonic()
        if now - self._inform_all_at > self.inform_recheck:
            wanted = list(board.requests.values())
            self._inform_all_at = now
        else:
            wanted = [board.requests[n] for n in self._inform_dirty if n in board.requests]
        self._inform_dirty.clear()
        if wanted:
            await self.desk.journal.with_inform(wanted)

    async def _catch_up(self, board: Snapshot) -> None:
        """Read again what events named, and the conversations with messages newer than the board's."""
        named_conversations, self._conversations = self._conversations, set()
        named_requests, self._requests = self._requests, set()
        named_contacts, self._contacts = self._contacts, set()
        listed = _active(board.conversations.values())
        if named_requests & listed:
            changed = await self.desk.requests_of(named_requests & listed)
            board.requests.update(changed)
            named_conversations |= {str(r["conversation_id"]) for r in changed.values() if r.get("conversation_id")}
        fresh = await self.desk.conversations_by_id(named_conversations)
        stamps = [c["last_message_at"] for c in board.conversations.values() if c.get("last_message_at")]
        since = max(stamps) if stamps else board.read_from
        fresh.update({c["_id"]: c for c in await self.desk.conversations_since(since)})
        for conversation_id in named_conversations - fresh.keys():
            board.conversations.pop(conversation_id, None)
        board.conversations.update(fresh)
        self._prune(board)
        listed = _active(board.conversations.values())
        wanted = (listed - board.requests.keys()) | (_active(fresh.values()) & named_requests)
        if wanted:
            board.requests.update(await self.desk.requests_of(wanted))
        self._inform_dirty.update(wanted | _active(fresh.values()))
        people = {str(c["contact_id"]) for c in board.conversations.values() if c.get("contact_id")}
        people = (people - board.contacts.keys()) | named_contacts
        if people:
            board.contacts.update(await self.desk.contacts_by_id(people))

    def _prune(self, board: Snapshot) -> None:
        """Keep the open conversations and the latest others; forget requests nobody lists."""
        ordered = sorted(
            (c for c in board.conversations.values() if not is_open(c)),
            key=lambda c: c["last_message_at"].timestamp() if c.get("last_message_at") else 0.0,
            reverse=True,
        )
        for conversation in ordered[self.recent :]:
            board.conversations.pop(conversation["_id"], None)
        for number in set(board.requests) - _active(board.conversations.values()):
            board.requests.pop(number, None)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _active(conversations: Iterable[ConversationDoc]) -> set[str]:
    return {str(c["active_request"]) for c in conversations if c.get("active_request")}
