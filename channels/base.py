"""What every channel adapter is: a small class with a ``name``, ``start(publish)``
and ``send(outbound)``. Adapters know their API and nothing about requests,
categories or deadlines; the router never asks which channel a message is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import aiohttp
from aiohttp import web

from adshub.contract import Attachment, Inbound, Outbound

if TYPE_CHECKING:
    from adshub.settings import Settings
    from journal.repository import Journal

log = logging.getLogger("adshub.channels")

Publish = Callable[[Inbound], Awaitable[None]]
"""Returns once the broker confirmed the message; raises ``TransientError`` otherwise."""

SendResult = Literal["sent", "queued"]
"""``queued``: accepted but not yet seen by the resident (a web chat that is closed right now)."""


@dataclass
class ChannelContext:
    """What an adapter may use besides its own API: settings, and the journal for its own state
    (cursors, stored files, chat history) — never for requests."""

    settings: Settings
    journal: Journal
    extra: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    name: ClassVar[str]
    local_delivery: ClassVar[bool]
    """True when replies reach residents through connections held by this very process (web chat):
    every process then receives a copy of each reply for its own connections."""

    def __init__(self, context: ChannelContext) -> None: ...

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        """Whether the company's settings switch this channel on."""
        ...

    def routes(self) -> list[web.AbstractRouteDef]:
        """HTTP routes the channel serves on the hub's server (webhooks, pages); may be empty."""
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


async def keep_file(
    context: ChannelContext,
    http: aiohttp.ClientSession,
    url: str,
    attachment: Attachment,
    inbound_id: str,
    channel: str,
) -> Attachment:
    """Download an attachment's bytes and keep them in the journal with the message.

    A file that cannot be fetched (too large, gone, the API down) keeps its reference: the message
    is still taken in, and a dispatcher sees what was attached.
    """
    limit = context.settings.max_attachment_bytes
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
            response.raise_for_status()
            data = await response.content.read(limit + 1)
        if len(data) > limit:
            raise ValueError("file too large")
        stored = await context.journal.store_file(
            data,
            attachment.name or "file",
            attachment.mime,
            {"channel": channel, "message_id": inbound_id, "kind": attachment.kind},
        )
    except Exception as exc:
        log.warning("%s file not fetched (%s); keeping its reference", channel, exc, extra={"message_id": inbound_id})
        return attachment
    return attachment.model_copy(update={"location": stored, "size": len(data)})
