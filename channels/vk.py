"""The company's VK community: vk_api's Bots Long Poll for intake, messages.send for replies.

vk_api is blocking (requests), so every call runs in a worker thread and the
event loop never waits on it. Failed 1/2/3 answers of the long poll server are
handled by refreshing the key or ts; network errors reconnect with backoff.
The long poll position (ts) advances only after the broker confirmed every
event of a batch, and is kept in the journal across restarts.

Replies carry ``random_id`` derived from the outbound message id: VK drops a
second send with the same random_id, so a retried send cannot duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests
import vk_api
from pydantic import Field, SecretStr, field_validator
from vk_api.bot_longpoll import VkBotLongPoll

from adshub import jsontext
from adshub.contract import Attachment, ChannelProfile, GeoPoint, Inbound, InboundKind, Outbound, Sender
from adshub.errors import InvalidInput, PermanentDeliveryError, RetryableDeliveryError, TransientError
from adshub.settings import ChannelSettings, Settings, http_url
from channels.base import BaseChannel, ChannelContext, SendResult

log = logging.getLogger("adshub.channels.vk")

VK_API_DEFAULTS = ("https://api.vk.ru/method", "https://api.vk.com/method")
GROUP_CHAT_FROM = 2_000_000_000
COMMAND_RE = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:\s+(.*))?$", re.DOTALL)
RETRYABLE_CODES = {1, 6, 9, 10, 603}
"""Unknown error, too many requests, flood control, internal error, a server-side hiccup."""
MAX_MESSAGE = 4000


class RedirectingSession(requests.Session):
    """vk_api posts to the official API host; send those calls to ``ADSHUB_VK_API_BASE`` instead."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        for prefix in VK_API_DEFAULTS:
            if url.startswith(prefix):
                url = self.base + url[len(prefix) :]
                break
        kwargs.setdefault("timeout", 30)
        return super().request(method, url, *args, **kwargs)


def _mention_removed(text: str, group_id: int) -> tuple[bool, str]:
    pattern = re.compile(rf"\[(?:club|public){group_id}\|[^\]]*\]|@(?:club|public){group_id}\b", re.IGNORECASE)
    if pattern.search(text):
        return True, pattern.sub("", text).strip(" ,")
    return False, text


def _photo(attachment: dict[str, Any]) -> Attachment | None:
    photo = attachment.get("photo")
    if not isinstance(photo, dict):
        return None
    sizes = [s for s in photo.get("sizes") or [] if isinstance(s, dict) and s.get("url")]
    if not sizes:
        return None
    best = max(sizes, key=lambda s: (s.get("width") or 0) * (s.get("height") or 0))
    return Attachment(
        kind="photo",
        name=f"photo{photo.get('owner_id')}_{photo.get('id')}.jpg",
        mime="image/jpeg",
        location=str(best["url"]),
        meta={"width": best.get("width"), "height": best.get("height")},
    )


def parse_event(raw: Any, group_id: int) -> Inbound | None:
    """One Bots Long Poll event as an Inbound, or None when it is not for the hub. Raises InvalidInput."""
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise InvalidInput("not a VK event: no type")
    kind = raw["type"]
    try:
        if kind == "message_event":
            return _message_event(raw)
        if kind not in ("message_new", "message_edit"):
            return None
        obj = raw["object"]
        message = obj.get("message", obj) if isinstance(obj, dict) else None
        if not isinstance(message, dict):
            raise InvalidInput("VK message event without a message")
        if message.get("out"):
            return None
        peer_id = int(message["peer_id"])
        from_id = int(message["from_id"])
        if from_id <= 0:
            return None
        text = str(message.get("text") or "")
        if peer_id >= GROUP_CHAT_FROM:
            addressed, text = _mention_removed(text, group_id)
            if not addressed:
                return None
        cmid = int(message.get("conversation_message_id") or message.get("id") or 0)
        if cmid <= 0:
            raise InvalidInput("VK message without conversation_message_id")
        base_id = f"vk:{peer_id}:{cmid}"
        date = (
            int(message.get("update_time") or message.get("date") or 0)
            if kind == "message_edit"
            else int(message.get("date") or 0)
        )
        attachments = [a for a in (_photo(x) for x in message.get("attachments") or [] if isinstance(x, dict)) if a]
        geo = message.get("geo")
        location = None
        if isinstance(geo, dict) and isinstance(geo.get("coordinates"), dict):
            place = geo.get("place") or {}
            location = GeoPoint(
                latitude=float(geo["coordinates"]["latitude"]),
                longitude=float(geo["coordinates"]["longitude"]),
                title=place.get("title"),
            )
        payload: dict[str, Any] = {}
        inbound_kind: InboundKind = "edit" if kind == "message_edit" else "message"
        command = COMMAND_RE.match(text.strip()) if inbound_kind == "message" else None
        button = _button_payload(message.get("payload"))
        if command:
            inbound_kind = "command"
            payload = {"command": command.group(1).lower(), "args": (command.group(2) or "").strip()}
        elif button.get("command") == "start":
            inbound_kind = "command"
            payload = {"command": "start", "args": ""}
        return Inbound(
            id=f"{base_id}:edit:{date}" if kind == "message_edit" else base_id,
            channel="vk",
            address=str(peer_id),
            sender=Sender(id=str(from_id)),
            kind=inbound_kind,
            text=text,
            attachments=attachments,
            location=location,
            received_at=datetime.fromtimestamp(date, UTC) if date else datetime.now(UTC),
            edit_of=base_id if kind == "message_edit" else None,
            payload=payload,
            raw=raw,
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError) as exc:
        raise InvalidInput(f"malformed VK event: {type(exc).__name__}: {exc}") from exc


def _button_payload(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        with contextlib.suppress(InvalidInput):
            parsed = jsontext.loads(value)
            if isinstance(parsed, dict):
                return parsed
    return {}


def _message_event(raw: dict[str, Any]) -> Inbound:
    obj = raw["object"]
    payload = _button_payload(obj.get("payload"))
    given = payload.get("data")
    data = given if isinstance(given, str) else json.dumps(payload, ensure_ascii=False)
    return Inbound(
        id=f"vk:cb:{obj['event_id']}",
        channel="vk",
        address=str(int(obj["peer_id"])),
        sender=Sender(id=str(int(obj["user_id"]))),
        kind="callback",
        received_at=datetime.now(UTC),
        payload={
            "data": data[:64],
            "event_id": str(obj["event_id"]),
            "user_id": int(obj["user_id"]),
            "peer_id": int(obj["peer_id"]),
        },
        raw=raw,
    )


def keyboard(outbound: Outbound) -> str | None:
    if not outbound.buttons:
        return None
    rows = [
        [{"action": {"type": "callback", "label": b.text[:40], "payload": json.dumps({"data": b.data})}} for b in row]
        for row in outbound.buttons
    ]
    return json.dumps({"inline": True, "buttons": rows}, ensure_ascii=False)


class VKSettings(ChannelSettings):
    """A community token and the community's id switch the Bots Long Poll on."""

    vk_token: SecretStr = SecretStr("")
    vk_group_id: int = 0
    vk_api_base: str = "https://api.vk.ru/method"
    vk_api_version: str = "5.199"
    vk_wait: int = Field(25, ge=1, le=90)

    @field_validator("vk_api_base")
    @classmethod
    def _http(cls, value: str) -> str:
        return http_url(value)


class VK(BaseChannel):
    """The VK community channel."""

    name: ClassVar[str] = "vk"
    profile: ClassVar[ChannelProfile] = ChannelProfile("vk", "ВКонтакте")
    settings_model: ClassVar[type[ChannelSettings]] = VKSettings

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        config: VKSettings = self.config_of(context.settings)
        self.config = config
        self.group_id = config.vk_group_id
        self.vk = vk_api.VkApi(
            token=config.vk_token.get_secret_value(),
            api_version=config.vk_api_version,
            session=RedirectingSession(config.vk_api_base),
        )
        self.vk.RPS_DELAY = 0.05

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        config = cls.config_of(settings)
        return bool(config.vk_token.get_secret_value()) and config.vk_group_id > 0

    @property
    def cursor_name(self) -> str:
        return f"vk:{self.group_id}"

    async def open(self) -> None:
        self.run(self._run(), "intake")

    async def _connect(self) -> VkBotLongPoll:
        delay = 1.0
        while True:
            try:
                longpoll = await asyncio.to_thread(VkBotLongPoll, self.vk, self.group_id, self.config.vk_wait)
                saved = await self.journal.get_cursor(self.cursor_name)
                if saved.get("ts"):
                    longpoll.ts = saved["ts"]
                return longpoll
            except (requests.RequestException, vk_api.exceptions.VkApiError, KeyError, ValueError) as exc:
                log.warning("VK long poll server not available (%s); retrying in %.0fs", exc, delay)
                await self.sleep(delay)
                delay = min(delay * 2, 60)

    async def _run(self) -> None:
        longpoll = await self._connect()
        delay = 1.0
        while not self.stopping:
            before = longpoll.ts
            try:
                events = await asyncio.to_thread(longpoll.check)
                delay = 1.0
            except (requests.RequestException, vk_api.exceptions.VkApiError, ValueError, KeyError) as exc:
                log.warning("VK long poll failed (%s); reconnecting in %.0fs", type(exc).__name__, delay)
                await self.sleep(delay)
                delay = min(delay * 2, 60)
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(longpoll.update_longpoll_server, False)
                continue
            try:
                for event in events:
                    await self.take(event.raw)
            except TransientError as exc:
                log.warning("broker unavailable; the events will be read again: %s", exc)
                longpoll.ts = before
                await self.sleep(2.0)
                continue
            if events and longpoll.ts != before:
                with contextlib.suppress(Exception):
                    await self.journal.set_cursor(self.cursor_name, {"ts": longpoll.ts})

    def parse(self, raw: Any) -> Inbound | None:
        return parse_event(raw, self.group_id)

    async def acknowledge(self, inbound: Inbound) -> None:
        if inbound.kind == "callback":
            await asyncio.to_thread(
                self.vk.method,
                "messages.sendMessageEventAnswer",
                {
                    "event_id": inbound.payload["event_id"],
                    "user_id": inbound.payload["user_id"],
                    "peer_id": inbound.payload["peer_id"],
                },
            )

    async def keep_files(self, inbound: Inbound) -> Inbound:
        if not inbound.attachments:
            return inbound
        kept = []
        for attachment in inbound.attachments:
            url = attachment.location or ""
            if attachment.kind == "photo" and url.startswith(("http://", "https://")):
                attachment = await self.keep_file(url, attachment, inbound.id)
            kept.append(attachment)
        return inbound.model_copy(update={"attachments": kept})

    async def send(self, outbound: Outbound) -> SendResult:
        values: dict[str, Any] = {
            "peer_id": int(outbound.address),
            "message": outbound.text[:MAX_MESSAGE],
            "random_id": outbound.numeric_id,
        }
        markup = keyboard(outbound)
        if markup:
            values["keyboard"] = markup
        try:
            await asyncio.to_thread(self.vk.method, "messages.send", values)
        except vk_api.exceptions.ApiError as exc:
            if exc.code in RETRYABLE_CODES:
                raise RetryableDeliveryError(f"VK error {exc.code}: {exc.error.get('error_msg')}") from exc
            raise PermanentDeliveryError(f"VK refused the message: {exc.code} {exc.error.get('error_msg')}") from exc
        except (vk_api.exceptions.ApiHttpError, requests.RequestException) as exc:
            raise RetryableDeliveryError(f"VK API unavailable: {type(exc).__name__}") from exc
        return "sent"
