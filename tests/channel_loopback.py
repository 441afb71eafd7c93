"""A channel that exists only in the test suite: it proves that a new channel is one file plus one
registry line. Its "remote API" is two lists in memory: what residents send and what the hub sent back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from adshub.contract import ChannelProfile, Inbound, Outbound, Sender
from adshub.errors import InvalidInput
from adshub.settings import ChannelSettings, Settings
from channels.base import BaseChannel, SendResult


class LoopbackSettings(ChannelSettings):
    """``ADSHUB_LOOPBACK_ENABLED=true`` switches it on."""

    loopback_enabled: bool = False


class Loopback(BaseChannel):
    name: ClassVar[str] = "loopback"
    profile: ClassVar[ChannelProfile] = ChannelProfile("loopback", "Петля (тестовый канал)")
    settings_model: ClassVar[type[ChannelSettings]] = LoopbackSettings

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sent: list[Outbound] = []

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return bool(cls.config_of(settings).loopback_enabled)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.post("/loopback/hook", self.hook)]

    def parse(self, raw: Any) -> Inbound | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not isinstance(raw.get("text"), str):
            raise InvalidInput("a loopback message has a string id and text")
        person = str(raw.get("from") or "someone")
        return Inbound(
            id=f"loopback:{raw['id']}",
            channel=self.name,
            address=person,
            sender=Sender(id=person),
            text=raw["text"],
            received_at=datetime.now(UTC),
            raw=raw,
        )

    async def hook(self, request: web.Request) -> web.Response:
        taken = await self.take(await request.json())
        return web.json_response({"taken": taken is not None})

    async def send(self, outbound: Outbound) -> SendResult:
        self.sent.append(outbound)
        return "sent"
