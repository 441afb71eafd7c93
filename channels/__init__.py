"""Channel adapters, one module each. A new channel is a new module and one line here."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.base import Channel

REGISTRY: dict[str, str] = {
    "webchat": "channels.webchat:WebChat",
    "telegram": "channels.telegram:Telegram",
    "vk": "channels.vk:VK",
    "email": "channels.email:Email",
    "voicemail": "channels.voicemail:Voicemail",
}


def channel_class(name: str) -> type[Channel]:
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(import_module(module), attr)  # type: ignore[no-any-return]
