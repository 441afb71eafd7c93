"""SMS through SMS.ru's HTTP API: what tells a resident who only phoned their number and deadline, and an
executor who has no Telegram their new job.

The gateway joins a long text into one message on the handset; the hub counts the parts the network
carries (``sms_parts``) because the company pays per part and caps them per day
(``ADSHUB_SMS_DAILY_PARTS``, shared by every process through the journal). Delivery to the handset is
reported later: the channel asks ``sms/status`` for the messages still on their way and keeps what the
gateway says (status, cost) beside the delivery record.

SMS.ru has no idempotency key: a send is never retried once the gateway answered that it took it, and
the delivery worker skips messages already recorded as sent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import aiohttp
from pydantic import Field, SecretStr, field_validator

from adshub.contract import ChannelProfile, Outbound
from adshub.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from adshub.settings import ChannelSettings, Settings, http_url
from channels.base import BaseChannel, ChannelContext, SendResult

log = logging.getLogger("adshub.channels.sms")

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")
"""Characters that take two septets (an escape and the character)."""

MAX_PARTS = 8
"""SMS.ru refuses longer texts (code 205); the hub cuts its own text to fit instead."""

SEND_RETRYABLE = {220, 231}
"""The service is down for a moment; the same text to the same number was sent a moment ago."""
DELIVERED = {103, 110}
IN_TRANSIT = {-1, 100, 101, 102}
"""Queued, handed to the operator, on its way (and -1: the gateway does not know it yet)."""


def _units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)


def sms_parts(text: str) -> list[str]:
    """The parts the network carries ``text`` in: GSM-7 160 septets alone or 153 per part; anything else
    (Cyrillic) in UCS-2, 70 characters alone or 67 per part. A part never splits an escape pair or a
    surrogate pair."""
    if not text:
        return []
    if is_gsm7(text):
        cost = [2 if c in GSM7_EXTENDED else 1 for c in text]
        single, multi = 160, 153
    else:
        cost = [_units(c) for c in text]
        single, multi = 70, 67
    if sum(cost) <= single:
        return [text]
    parts: list[str] = []
    start, used = 0, 0
    for index, size in enumerate(cost):
        if used + size > multi:
            parts.append(text[start:index])
            start, used = index, 0
        used += size
    parts.append(text[start:])
    return parts


def fit(text: str, max_parts: int = MAX_PARTS) -> str:
    """``text`` cut at a word so it goes in at most ``max_parts`` parts."""
    if len(sms_parts(text)) <= max_parts:
        return text
    words = text.split(" ")
    while words and len(sms_parts(" ".join(words) + "…")) > max_parts:
        words.pop()
    return " ".join(words) + "…"


def gateway_number(address: str) -> str:
    """SMS.ru wants the digits of an international number: 79161234567."""
    return "".join(ch for ch in address if ch.isdigit())


class SmsSettings(ChannelSettings):
    """The SMS.ru account's api_id switches the channel on."""

    sms_ru_api_id: SecretStr = SecretStr("")
    sms_api_base: str = "https://sms.ru"
    sms_sender: str = ""
    """A sender name agreed with the gateway («UK-Dom»); empty: the gateway's default."""
    sms_daily_parts: int = Field(500, ge=0)
    """At most this many parts a day (what the company pays for); beyond it messages fail with the reason."""
    sms_status_poll_seconds: float = Field(20.0, gt=0)
    sms_test: bool = False
    """SMS.ru's test mode: the gateway answers as if it sent, sends nothing and charges nothing."""

    @field_validator("sms_api_base")
    @classmethod
    def _http(cls, value: str) -> str:
        return http_url(value)


class Sms(BaseChannel):
    """SMS out through SMS.ru; no intake (residents who only phone come in by voicemail)."""

    name: ClassVar[str] = "sms"
    profile: ClassVar[ChannelProfile] = ChannelProfile(
        "sms", "SMS", executor_address="Телефон для SMS", reaches_phones=True
    )
    settings_model: ClassVar[type[ChannelSettings]] = SmsSettings
    http_timeout: ClassVar[aiohttp.ClientTimeout] = aiohttp.ClientTimeout(total=30)

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        self.config: SmsSettings = self.config_of(context.settings)
        self.api_id = self.config.sms_ru_api_id.get_secret_value()
        self.base = self.config.sms_api_base

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return bool(cls.config_of(settings).sms_ru_api_id.get_secret_value())

    async def open(self) -> None:
        self.run(self._follow_reports(), "status")

    async def _call(self, method: str, values: dict[str, Any]) -> dict[str, Any]:
        form = {"api_id": self.api_id, "json": "1", **values}
        try:
            async with self.http.post(f"{self.base}/{method}", data=form) as response:
                if response.status >= 500 or response.status == 429:
                    raise RetryableDeliveryError(f"SMS gateway answered HTTP {response.status}")
                if response.status >= 400:
                    raise PermanentDeliveryError(f"SMS gateway refused the request: HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableDeliveryError(f"SMS gateway unavailable: {type(exc).__name__}") from exc
        if not isinstance(body, dict):
            raise RetryableDeliveryError("SMS gateway answered something that is not JSON")
        return body

    async def send(self, outbound: Outbound) -> SendResult:
        number = gateway_number(outbound.address)
        if len(number) < 10:
            raise PermanentDeliveryError("not a phone number an SMS can go to")
        text = fit(outbound.text)
        parts = len(sms_parts(text))
        now = datetime.now(UTC)
        day = now.astimezone(self.settings.zone).date().isoformat()
        if not await self.journal.take_quota(f"sms-parts:{day}", parts, self.config.sms_daily_parts):
            raise PermanentDeliveryError(f"the day's SMS limit of {self.config.sms_daily_parts} parts is reached")
        values = {"to": number, "msg": text}
        if self.config.sms_sender:
            values["from"] = self.config.sms_sender
        if self.config.sms_test:
            values["test"] = "1"
        try:
            entry = await self._submit(values, outbound.address)
        except DeliveryError:
            await self.journal.take_quota(f"sms-parts:{day}", -parts, self.config.sms_daily_parts)
            raise
        await self.journal.record_report(
            {
                "_id": outbound.id,
                "channel": self.name,
                "gateway_id": str(entry.get("sms_id") or ""),
                "address": outbound.address,
                "parts": parts,
                "cost": None,
                "state": "accepted",
                "state_text": "Принято оператором SMS",
                "final": False,
                "request_number": outbound.request_number,
                "sent_at": now,
                "updated_at": now,
            }
        )
        return "sent"

    async def _submit(self, values: dict[str, Any], address: str) -> dict[str, Any]:
        """The gateway's answer for the one number, or the delivery error it amounts to (nothing was sent)."""
        body = await self._call("sms/send", values)
        entry = (body.get("sms") or {}).get(values["to"]) if body.get("status") == "OK" else body
        if not isinstance(entry, dict) or entry.get("status") != "OK":
            entry = entry if isinstance(entry, dict) else {}
            code = int(entry.get("status_code") or 0)
            reason = f"SMS gateway refused {address}: {code} {entry.get('status_text') or ''}".strip()
            if code in SEND_RETRYABLE:
                raise RetryableDeliveryError(reason)
            raise PermanentDeliveryError(reason)
        return entry

    async def _follow_reports(self) -> None:
        while not self.stopping:
            try:
                await self.check_reports()
            except Exception as exc:
                log.warning("SMS delivery reports not read: %s", exc)
            await self.sleep(self.config.sms_status_poll_seconds)

    async def check_reports(self) -> int:
        """Ask the gateway what became of the messages still on their way; returns how many became final."""
        now = datetime.now(UTC)
        pending = await self.journal.pending_reports(self.name, now - timedelta(days=2))
        by_gateway = {p["gateway_id"]: p for p in pending if p.get("gateway_id")}
        if not by_gateway:
            return 0
        body = await self._call("sms/status", {"sms_id": ",".join(by_gateway)})
        finished = 0
        for gateway_id, status in (body.get("sms") or {}).items():
            report = by_gateway.get(gateway_id)
            if report is None or not isinstance(status, dict):
                continue
            code = int(status.get("status_code") or -1)
            if code in IN_TRANSIT:
                continue
            state = "delivered" if code in DELIVERED else "failed"
            cost = status.get("cost")
            await self.journal.record_report(
                {
                    "_id": report["_id"],
                    "state": state,
                    "state_text": str(status.get("status_text") or ""),
                    "cost": float(cost) if cost is not None else None,
                    "final": True,
                    "updated_at": now,
                }
            )
            finished += 1
        return finished
