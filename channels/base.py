"""What every channel adapter is: a small class with a ``name``, ``start(publish)``
and ``send(outbound)``. Adapters know their API and nothing about requests,
categories or deadlines; the router never asks which channel a message is on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from aiohttp import web

from adshub.contract import Inbound, Outbound

if TYPE_CHECKING:
    from adshub.settings import Settings
    from journal.repository import Journal

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
