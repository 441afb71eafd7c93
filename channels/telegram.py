"""The company's Telegram bot (aiogram 3 for the Bot API client).

Long polling by default; webhook mode when ``ADSHUB_TELEGRAM_WEBHOOK_URL`` is
set (the secret token header is checked in constant time, 403 otherwise).
``ADSHUB_TELEGRAM_API_BASE`` points at the Bot API server (the official one,
a company's local Bot API server, or a test stand-in).

Updates are read as raw JSON and parsed leniently: the polling loop must never
stall on one update that a strict model rejects, and the offset (Telegram's
acknowledgement) advances only after the broker confirmed the message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup
from aiohttp import web
from pydantic import Field, SecretStr, field_validator

from adshub import jsontext
from adshub.contract import Attachment, ChannelProfile, GeoPoint, Inbound, InboundKind, Outbound, Sender
from adshub.errors import InvalidInput, PermanentDeliveryError, RetryableDeliveryError, TransientError
from adshub.settings import ChannelSettings, Settings, http_url
from channels.base import BaseChannel, ChannelContext, SendResult

log = logging.getLogger("adshub.channels.telegram")

START_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What Telegram carries in a deep link's ``start`` parameter."""
COMMAND_RE = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{3,64}))?(?:\s+(.*))?$", re.DOTALL)
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
MAX_MESSAGE = 4096


def _text_of(message: dict[str, Any]) -> str:
    return str(message.get("text") or message.get("caption") or "")


def _sender(user: dict[str, Any], phone: str | None = None) -> Sender:
    name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p) or user.get("username")
    return Sender(id=str(user["id"]), name=name or None, phone=phone)


def _addressed_to_bot(message: dict[str, Any], text: str, username: str | None) -> tuple[bool, str]:
    """In a group the bot takes only what is meant for it: its commands, mentions and replies to it."""
    chat_type = (message.get("chat") or {}).get("type")
    if chat_type == "private":
        return True, text
    if chat_type not in ("group", "supergroup"):
        return False, text
    command = COMMAND_RE.match(text)
    if command:
        target = command.group(2)
        return (target is None or (username is not None and target.lower() == username.lower())), text
    if username and f"@{username.lower()}" in text.lower():
        cleaned = re.sub(rf"@{re.escape(username)}\b", "", text, flags=re.IGNORECASE).strip()
        return True, cleaned
    replied = (message.get("reply_to_message") or {}).get("from") or {}
    if replied.get("is_bot") and username and str(replied.get("username", "")).lower() == username.lower():
        return True, text
    return False, text


def _attachments(message: dict[str, Any]) -> list[Attachment]:
    found: list[Attachment] = []
    photos = message.get("photo")
    if isinstance(photos, list) and photos:
        best = max(photos, key=lambda p: (p.get("file_size") or 0, (p.get("width") or 0) * (p.get("height") or 0)))
        found.append(
            Attachment(
                kind="photo",
                name=f"photo_{best.get('file_unique_id', best['file_id'])}.jpg",
                mime="image/jpeg",
                size=best.get("file_size"),
                location=f"telegram-file:{best['file_id']}",
                meta={"width": best.get("width"), "height": best.get("height")},
            )
        )
    voice = message.get("voice")
    if isinstance(voice, dict) and voice.get("file_id"):
        found.append(
            Attachment(
                kind="voice",
                name="voice.ogg",
                mime=voice.get("mime_type") or "audio/ogg",
                size=voice.get("file_size"),
                location=f"telegram-file:{voice['file_id']}",
                meta={"duration": voice.get("duration")},
            )
        )
    document = message.get("document")
    if isinstance(document, dict) and document.get("file_id"):
        found.append(
            Attachment(
                kind="document",
                name=document.get("file_name") or "document",
                mime=document.get("mime_type"),
                size=document.get("file_size"),
                location=f"telegram-file:{document['file_id']}",
            )
        )
    return found


def parse_update(raw: Any, username: str | None = None) -> Inbound | None:
    """One Bot API update as an Inbound, or None when it is not for the hub. Raises InvalidInput."""
    if not isinstance(raw, dict) or not isinstance(raw.get("update_id"), int):
        raise InvalidInput("not a Telegram update: no integer update_id")
    try:
        if "callback_query" in raw:
            return _callback(raw["callback_query"], raw)
        edited = "edited_message" in raw
        message = raw.get("edited_message") if edited else raw.get("message")
        if not isinstance(message, dict):
            return None
        chat_id, message_id = str(message["chat"]["id"]), int(message["message_id"])
        user = message.get("from") or {}
        if not user or user.get("is_bot"):
            return None
        text = _text_of(message)
        addressed, text = _addressed_to_bot(message, text, username)
        if not addressed:
            return None
        base_id = f"telegram:{chat_id}:{message_id}"
        date = int(message.get("edit_date") or message["date"]) if edited else int(message["date"])
        contact = message.get("contact") if isinstance(message.get("contact"), dict) else None
        own_phone = None
        if contact and str(contact.get("user_id")) == str(user.get("id")):
            own_phone = str(contact.get("phone_number") or "") or None
        location = message.get("location")
        geo = None
        if isinstance(location, dict):
            geo = GeoPoint(
                latitude=float(location["latitude"]),
                longitude=float(location["longitude"]),
                accuracy=location.get("horizontal_accuracy"),
            )
        kind: InboundKind = "edit" if edited else "message"
        payload: dict[str, Any] = {}
        command = COMMAND_RE.match(text) if not edited else None
        if command:
            kind = "command"
            payload = {"command": command.group(1).lower(), "args": (command.group(3) or "").strip()}
        if contact is not None:
            payload["shared_contact"] = bool(own_phone)
        return Inbound(
            id=f"{base_id}:edit:{date}" if edited else base_id,
            channel="telegram",
            address=chat_id,
            sender=_sender(user, own_phone),
            kind=kind,
            text=text,
            attachments=_attachments(message),
            location=geo,
            received_at=datetime.fromtimestamp(date, UTC),
            edit_of=base_id if edited else None,
            payload=payload,
            raw=raw,
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError) as exc:
        raise InvalidInput(f"malformed Telegram update {raw.get('update_id')}: {type(exc).__name__}: {exc}") from exc


def _callback(query: dict[str, Any], raw: dict[str, Any]) -> Inbound:
    user = query["from"]
    message = query.get("message") or {}
    chat_id = str((message.get("chat") or {}).get("id") or user["id"])
    return Inbound(
        id=f"telegram:cb:{query['id']}",
        channel="telegram",
        address=chat_id,
        sender=_sender(user),
        kind="callback",
        text="",
        received_at=datetime.now(UTC),
        payload={"data": str(query.get("data") or ""), "callback_id": str(query["id"])},
        raw=raw,
    )


class TelegramSettings(ChannelSettings):
    """``ADSHUB_TELEGRAM_TOKEN`` switches the bot on; the rest is optional."""

    telegram_token: SecretStr = SecretStr("")
    telegram_api_base: str = "https://api.telegram.org"
    telegram_webhook_url: str = ""
    telegram_webhook_secret: SecretStr = SecretStr("")
    telegram_poll_timeout: int = Field(25, ge=0, le=50)
    telegram_bot_username: str = Field("", pattern=r"^@?([A-Za-z][A-Za-z0-9_]{3,31})?$")
    """The bot's @username, for links that open a chat with it (t.me/<username>?start=…)."""

    @field_validator("telegram_api_base", "telegram_webhook_url")
    @classmethod
    def _http(cls, value: str) -> str:
        return http_url(value)


class Telegram(BaseChannel):
    """The Telegram bot channel."""

    name: ClassVar[str] = "telegram"
    profile: ClassVar[ChannelProfile] = ChannelProfile(
        "telegram", "Telegram", executor_address="Telegram chat id", sends_files=True
    )
    settings_model: ClassVar[type[ChannelSettings]] = TelegramSettings
    http_timeout: ClassVar[aiohttp.ClientTimeout] = aiohttp.ClientTimeout(total=None, sock_connect=10)

    @classmethod
    def start_link(cls, settings: Settings, payload: str) -> str | None:
        username = cls.config_of(settings).telegram_bot_username.lstrip("@")
        if not username or not START_PAYLOAD.fullmatch(payload):
            return None
        return f"https://t.me/{username}?start={payload}"

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        config: TelegramSettings = self.config_of(context.settings)
        self.config = config
        self.token = config.telegram_token.get_secret_value()
        self.base = config.telegram_api_base
        self.bot = Bot(self.token, session=AiohttpSession(api=TelegramAPIServer.from_base(self.base)))
        self.webhook_url = config.telegram_webhook_url
        configured_secret = config.telegram_webhook_secret.get_secret_value()
        self.secret = configured_secret or hashlib.sha256(f"adshub:{self.token}".encode()).hexdigest()
        self.username: str | None = None

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return bool(cls.config_of(settings).telegram_token.get_secret_value())

    @property
    def webhook_path(self) -> str:
        return urlsplit(self.webhook_url).path or "/telegram/webhook"

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.post(self.webhook_path, self.webhook)] if self.webhook_url else []

    async def open(self) -> None:
        self.run(self._run(), "intake")

    async def _run(self) -> None:
        delay = 1.0
        while not self.stopping:
            try:
                me = await self.bot.get_me()
                self.username = me.username
                if self.webhook_url:
                    await self.bot.set_webhook(
                        self.webhook_url, secret_token=self.secret, allowed_updates=ALLOWED_UPDATES
                    )
                    log.info("telegram webhook set at %s", self.webhook_path)
                    return
                await self.bot.delete_webhook(drop_pending_updates=False)
                break
            except Exception as exc:
                log.warning("telegram Bot API not reachable (%s); retrying in %.0fs", type(exc).__name__, delay)
                await self.sleep(delay)
                delay = min(delay * 2, 60)
        await self._poll()

    async def _get_updates(self, offset: int | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "timeout": self.config.telegram_poll_timeout,
            "allowed_updates": '["message","edited_message","callback_query"]',
        }
        if offset is not None:
            params["offset"] = offset
        url = f"{self.base}/bot{self.token}/getUpdates"
        timeout = aiohttp.ClientTimeout(total=self.config.telegram_poll_timeout + 15)
        async with self.http.post(url, data=params, timeout=timeout) as response:
            body = await response.json(content_type=None)
        if not isinstance(body, dict) or not body.get("ok"):
            retry = (body or {}).get("parameters", {}).get("retry_after") if isinstance(body, dict) else None
            raise RetryableDeliveryError(f"getUpdates failed: {str(body)[:200]}", retry_after=retry)
        result = body.get("result")
        return [u for u in result if isinstance(u, dict)] if isinstance(result, list) else []

    async def _poll(self) -> None:
        """Long polling; the offset moves past an update only once the broker has it."""
        offset: int | None = None
        delay = 1.0
        while not self.stopping:
            try:
                updates = await self._get_updates(offset)
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                retry = getattr(exc, "retry_after", None)
                log.warning("telegram getUpdates failed (%s); retrying", type(exc).__name__)
                await self.sleep(retry or delay)
                delay = min(delay * 2, 30)
                continue
            for raw in updates:
                try:
                    await self.take(raw)
                except TransientError as exc:
                    log.warning("broker unavailable, update %s will be fetched again: %s", raw.get("update_id"), exc)
                    await self.sleep(2.0)
                    break
                offset = int(raw["update_id"]) + 1

    def parse(self, raw: Any) -> Inbound | None:
        return parse_update(raw, self.username)

    async def acknowledge(self, inbound: Inbound) -> None:
        callback_id = inbound.payload.get("callback_id")
        if callback_id:
            await self.bot.answer_callback_query(callback_id)

    async def keep_files(self, inbound: Inbound) -> Inbound:
        """Fetch the bytes of photos and voice messages and keep them with the message."""
        kept: list[Attachment] = []
        for attachment in inbound.attachments:
            ref = attachment.location or ""
            too_big = (attachment.size or 0) > self.settings.max_attachment_bytes
            if not ref.startswith("telegram-file:") or too_big or attachment.kind == "document":
                kept.append(attachment)
                continue
            try:
                file = await self.bot.get_file(ref.removeprefix("telegram-file:"))
            except Exception as exc:
                log.warning("telegram file unknown (%s); keeping the reference", exc, extra={"message_id": inbound.id})
                kept.append(attachment)
                continue
            url = f"{self.base}/file/bot{self.token}/{file.file_path}"
            kept.append(await self.keep_file(url, attachment, inbound.id))
        return inbound.model_copy(update={"attachments": kept}) if kept else inbound

    async def webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            log.warning("telegram webhook call with a wrong secret token from %s", request.remote)
            raise web.HTTPForbidden(text="wrong secret token")
        try:
            raw = jsontext.loads(await request.read())
        except InvalidInput as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        try:
            await self.take(raw)
        except TransientError:
            raise web.HTTPServiceUnavailable(text="try again later") from None
        return web.json_response({"ok": True})

    async def close(self) -> None:
        await self.bot.session.close()

    async def _files(self, outbound: Outbound) -> list[tuple[str, bytes]]:
        found: list[tuple[str, bytes]] = []
        for item in outbound.files:
            stored = await self.journal.read_file(item.ref)
            if stored is None:
                raise PermanentDeliveryError(f"attachment {item.name} is no longer in the journal")
            found.append((item.name, stored[0]))
        return found

    async def send(self, outbound: Outbound) -> SendResult:
        markup = None
        if outbound.buttons:
            markup = InlineKeyboardMarkup(
                inline_keyboard=[
                    [InlineKeyboardButton(text=b.text, callback_data=b.data) for b in row] for row in outbound.buttons
                ]
            )
        chunks = [outbound.text[i : i + MAX_MESSAGE] for i in range(0, len(outbound.text), MAX_MESSAGE)]
        chat_id = int(outbound.address) if outbound.address.lstrip("-").isdigit() else outbound.address
        files = await self._files(outbound)
        try:
            for index, chunk in enumerate(chunks):
                last = index == len(chunks) - 1
                await self.bot.send_message(chat_id=chat_id, text=chunk, reply_markup=markup if last else None)
            for name, data in files:
                await self.bot.send_document(chat_id=chat_id, document=BufferedInputFile(data, filename=name))
        except TelegramRetryAfter as exc:
            raise RetryableDeliveryError(
                f"Telegram asks to wait {exc.retry_after}s", retry_after=exc.retry_after
            ) from exc
        except (TimeoutError, TelegramServerError, TelegramNetworkError, ClientDecodeError, aiohttp.ClientError) as exc:
            raise RetryableDeliveryError(f"Bot API unavailable: {type(exc).__name__}: {exc}") from exc
        except TelegramForbiddenError as exc:
            raise PermanentDeliveryError(f"the resident blocked the bot or left the chat: {exc.message}") from exc
        except (TelegramBadRequest, TelegramNotFound, TelegramUnauthorizedError) as exc:
            raise PermanentDeliveryError(f"Telegram refused the message: {exc.message}") from exc
        return "sent"
