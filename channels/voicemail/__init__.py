"""Voicemail and missed calls from the company's phone system: one channel, three sources.

- ``asterisk``: the voicemail spool of an Asterisk PBX (``ADSHUB_VOICEMAIL_SPOOL``);
- ``mango``: MANGO OFFICE's signed notifications and its speech recognition;
- ``webhook``: any PBX that can sign a JSON webhook.

A voicemail has no way back on its own channel: it is registered like any
message and the way back to the caller is the callback task (10 minutes).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol

from aiohttp import web
from pydantic import Field, SecretStr, field_validator

from adshub.contract import ChannelProfile, Outbound
from adshub.errors import PermanentDeliveryError
from adshub.settings import ChannelSettings, Settings, http_url
from channels.base import BaseChannel, ChannelContext, SendResult
from channels.voicemail.asterisk import AsteriskSpool
from channels.voicemail.calls import CHANNEL
from channels.voicemail.mango import MangoOffice
from channels.voicemail.webhook import SignedWebhook


class VoicemailSettings(ChannelSettings):
    """Any one of the spool, the MANGO OFFICE key or the webhook secret switches the channel on."""

    voicemail_spool: Path | None = None
    voicemail_poll_seconds: float = Field(2.0, gt=0)
    voicemail_webhook_secret: SecretStr = SecretStr("")
    mango_api_key: SecretStr = SecretStr("")
    mango_api_salt: SecretStr = SecretStr("")
    mango_api_base: str = "https://app.mango-office.ru/vpbx"

    @field_validator("mango_api_base")
    @classmethod
    def _http(cls, value: str) -> str:
        return http_url(value)


class Source(Protocol):
    """One phone system feeding the channel."""

    def routes(self) -> list[web.AbstractRouteDef]: ...

    async def open(self) -> None: ...


class Voicemail(BaseChannel):
    """Voicemail intake from Asterisk, MANGO OFFICE and any PBX that can sign a webhook."""

    name: ClassVar[str] = CHANNEL
    profile: ClassVar[ChannelProfile] = ChannelProfile(CHANNEL, "Голосовое сообщение", can_reply=False)
    settings_model: ClassVar[type[ChannelSettings]] = VoicemailSettings

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        config: VoicemailSettings = self.config_of(context.settings)
        self.config = config
        self.sources: list[Source] = []
        if config.voicemail_spool:
            self.sources.append(AsteriskSpool(self, Path(config.voicemail_spool), config.voicemail_poll_seconds))
        key = config.mango_api_key.get_secret_value()
        if key:
            self.sources.append(MangoOffice(self, key, config.mango_api_salt.get_secret_value(), config.mango_api_base))
        secret = config.voicemail_webhook_secret.get_secret_value()
        if secret:
            self.sources.append(SignedWebhook(self, secret))

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        config = cls.config_of(settings)
        return bool(
            config.voicemail_spool
            or config.mango_api_key.get_secret_value()
            or config.voicemail_webhook_secret.get_secret_value()
        )

    def routes(self) -> list[web.AbstractRouteDef]:
        return [route for source in self.sources for route in source.routes()]

    async def open(self) -> None:
        for source in self.sources:
            await source.open()

    async def send(self, outbound: Outbound) -> SendResult:
        raise PermanentDeliveryError("a voicemail has no way back on its channel; the callback task is")
