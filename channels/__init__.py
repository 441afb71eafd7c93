"""Channel adapters, one module each. A new channel is a new module and one line in ``REGISTRY``."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from channels.base import Channel

REGISTRY: dict[str, str] = {
    "webchat": "channels.webchat:WebChat",
    "telegram": "channels.telegram:Telegram",
    "vk": "channels.vk:VK",
    "email": "channels.email:Email",
    "voicemail": "channels.voicemail:Voicemail",
    "sms": "channels.sms:Sms",
}


def register(name: str, target: str) -> None:
    """Add a channel by ``"module:Class"``; a channel outside this package (a site's own, a test's) needs only this."""
    REGISTRY[name] = target


def channel_class(name: str) -> type[Channel]:
    module, _, attr = REGISTRY[name].partition(":")
    return cast("type[Channel]", getattr(import_module(module), attr))
