"""What every channel adapter is: a small class with a ``name``, ``start(publish)`` and ``send(outbound)``.

Adapters know their API and nothing about requests, categories or deadlines; the
router never asks which channel a message is on. A channel declares what it can
do in its ``profile``, owns its settings model, and gets the shared intake
pipeline from ``BaseChannel``: parse an external event, keep its files, publish
it, count it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol

import aiohttp
from aiohttp import web

from adshub.contract import Attachment, ChannelProfile, Inbound, Outbound
from adshub.errors import InvalidInput
from adshub.metrics import METRICS
from adshub.settings import ChannelSettings, Settings

log = logging.getLogger("adshub.channels")

Publish = Callable[[Inbound], Awaitable[None]]
"""Returns once the broker confirmed the message; raises ``TransientError`` otherwise."""

SendResult = Literal["sent", "queued"]
"""``queued``: accepted but not yet seen by the resident (a web chat that is closed right now)."""


class ChannelJournal(Protocol):
    """What of the journal an adapter may use: its own state, files and the chat history — never requests."""

    async def get_cursor(self, name: str) -> dict[str, Any]: ...

    async def set_cursor(self, name: str, values: dict[str, Any]) -> None: ...

    async def store_file(
        self, data: bytes, filename: str, content_type: str | None, metadata: dict[str, Any] | None = None
    ) -> str: ...

    async def read_file(self, reference: str) -> tuple[bytes, str, str] | None: ...

    async def reply_files(self, message_id: str, channel: str) -> list[dict[str, Any]]: ...

    async def history(self, conversation_id: str, limit: int = 100, timeout: float | None = None) -> Sequence[Any]: ...

    async def delivered_ids(self, outbound_ids: Sequence[str]) -> set[str]: ...

    async def record_deliveries(
        self, outbounds: Sequence[Outbound], status: str, at: datetime, error: str | None = None
    ) -> None: ...

    async def record_report(self, report: Any) -> None: ...

    async def pending_reports(self, channel: str, since: datetime, limit: int = 100) -> Sequence[Any]: ...

    async def take_quota(self, key: str, amount: int, limit: int) -> bool: ...


@dataclass
class ChannelContext:
    """What an adapter may use besides its own API: the hub's settings and the journal for its own state."""

    settings: Settings
    journal: ChannelJournal
    extra: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    name: ClassVar[str]
    profile: ClassVar[ChannelProfile]

    def __init__(self, context: ChannelContext) -> None: ...

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        """Whether the company's settings switch this channel on."""
        ...

    @classmethod
    def start_link(cls, settings: Settings, payload: str) -> str | None:
        """A link that opens a chat with the company on this channel carrying ``payload`` (a Telegram deep
        link), or None where the channel has none or the settings do not say enough to make one."""
        ...

    def routes(self) -> list[web.AbstractRouteDef]:
        """HTTP routes the channel serves on the hub's server (webhooks, pages); may be empty."""
        ...

    def pages(self) -> dict[str, str]:
        """Public pages worth printing at start, by purpose: ``{"chat": "/chat"}``."""
        ...

    async def start(self, publish: Publish) -> None:
        """Begin intake: every external event becomes one Inbound handed to ``publish``."""
        ...

    async def send(self, outbound: Outbound) -> SendResult:
        """Deliver one reply; raise RetryableDeliveryError or PermanentDeliveryError on failure."""
        ...

    async def stop(self) -> None:
        """Stop intake and release connections; in-flight publishes finish first."""
        ...


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep between attempts, but wake at once when the channel is stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


class BaseChannel:
    """The shared parts of a channel: its settings, the intake pipeline, background tasks and an HTTP client."""

    name: ClassVar[str]
    profile: ClassVar[ChannelProfile]
    settings_model: ClassVar[type[ChannelSettings]] = ChannelSettings
    http_timeout: ClassVar[aiohttp.ClientTimeout] = aiohttp.ClientTimeout(total=60)

    def __init__(self, context: ChannelContext) -> None:
        self.context = context
        self.settings = context.settings
        self.journal = context.journal
        self._publish: Publish | None = None
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def config_of(cls, settings: Settings) -> Any:
        return settings.channel(cls.settings_model)

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return True

    @classmethod
    def start_link(cls, settings: Settings, payload: str) -> str | None:
        return None

    def routes(self) -> list[web.AbstractRouteDef]:
        return []

    def pages(self) -> dict[str, str]:
        return {}

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self.http_timeout)
        return self._http

    async def start(self, publish: Publish) -> None:
        self._publish = publish
        await self.open()

    async def open(self) -> None:
        """Start the channel's own intake (polling loops, watchers); webhooks need nothing here."""

    def run(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background loop until the channel stops."""
        self._tasks.append(asyncio.create_task(work, name=f"{self.name}:{name}"))

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self.close()

    async def close(self) -> None:
        """Release what the channel holds besides its tasks and HTTP client."""

    async def sleep(self, seconds: float) -> None:
        await pause(self._stopping, seconds)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the intake pipeline --------------------------------------------------------------

    def parse(self, raw: Any) -> Inbound | None:
        """One external event as an Inbound, or None when it is not for the hub. Raises InvalidInput."""
        raise NotImplementedError

    async def keep_files(self, inbound: Inbound) -> Inbound:
        """Fetch the bytes of the message's files and keep them in the journal (where the channel can)."""
        return inbound

    async def acknowledge(self, inbound: Inbound) -> None:
        """Tell the remote side the event was taken (a pressed button stops spinning)."""

    async def take(self, raw: Any) -> Inbound | None:
        """Parse → keep files → publish → count → acknowledge. A malformed event is logged and dropped;
        ``TransientError`` from publishing propagates, so the source is not acknowledged."""
        try:
            inbound = self.parse(raw)
        except InvalidInput as exc:
            log.warning("%s event refused: %s", self.name, exc)
            return None
        if inbound is None:
            return None
        inbound = await self.keep_files(inbound)
        await self.emit(inbound)
        with contextlib.suppress(Exception):
            await self.acknowledge(inbound)
        return inbound

    async def emit(self, inbound: Inbound) -> None:
        """Publish one message (the broker has confirmed it when this returns) and count it."""
        if self._publish is None:
            raise RuntimeError(f"channel {self.name} was not started")
        await self._publish(inbound)
        METRICS.messages_in.labels(channel=self.name).inc()

    async def keep_file(self, url: str, attachment: Attachment, inbound_id: str) -> Attachment:
        """Download an attachment's bytes and keep them in the journal with the message.

        A file that cannot be fetched (too large, gone, the API down) keeps its reference: the message
        is still taken in, and a dispatcher sees what was attached.
        """
        limit = self.settings.max_attachment_bytes
        try:
            async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
                response.raise_for_status()
                data = await response.content.read(limit + 1)
            if len(data) > limit:
                raise ValueError("file too large")
            stored = await self.journal.store_file(
                data,
                attachment.name or "file",
                attachment.mime,
                {"channel": self.name, "message_id": inbound_id, "kind": attachment.kind},
            )
        except Exception as exc:
            log.warning(
                "%s file not fetched (%s); keeping its reference", self.name, exc, extra={"message_id": inbound_id}
            )
            return attachment
        return attachment.model_copy(update={"location": stored, "size": len(data)})
