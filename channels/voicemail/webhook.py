"""Any other PBX: ``POST /telephony/voicemail``, a JSON body signed with HMAC-SHA256 (see README).

``X-Adshub-Signature: sha256=<hex HMAC(secret, timestamp + "." + body)>`` with
``X-Adshub-Timestamp`` within five minutes; the same id sent again is not taken
twice, and a transcript sent later is attached to the voicemail.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from adshub import jsontext
from adshub.contract import Attachment, Inbound, Sender
from adshub.errors import ForgedInput, InvalidInput, TransientError
from channels.voicemail.calls import CHANNEL, transcript_edit
from domain.phones import normalize_phone

if TYPE_CHECKING:
    from channels.voicemail import Voicemail

log = logging.getLogger("adshub.channels.voicemail.webhook")

HOOK_MAX_SKEW = 300


def hook_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_hook(secret: str, timestamp: str, signature: str, body: bytes, now: float | None = None) -> None:
    if not secret:
        raise ForgedInput("the generic voicemail webhook is not configured")
    try:
        skew = abs((now or time.time()) - int(timestamp))
    except ValueError:
        raise ForgedInput("X-Adshub-Timestamp is not a number") from None
    expected = hook_signature(secret, timestamp, body)
    if not hmac.compare_digest(signature.encode(), expected.encode()) or skew > HOOK_MAX_SKEW:
        raise ForgedInput("wrong or stale signature")


def hook_inbound(data: Any) -> Inbound:
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object")
    hook_id = data.get("id")
    if not isinstance(hook_id, str) or not 0 < len(hook_id) <= 200:
        raise InvalidInput("id must be a string of 1-200 characters")
    kind = data.get("kind", "voicemail")
    if kind not in ("voicemail", "missed_call"):
        raise InvalidInput("kind must be voicemail or missed_call")
    caller = str(data.get("caller") or "")
    phone = normalize_phone(caller) if caller else None
    received = datetime.now(UTC)
    if data.get("received_at"):
        try:
            received = datetime.fromisoformat(str(data["received_at"]))
        except ValueError as exc:
            raise InvalidInput(f"received_at is not ISO 8601: {exc}") from exc
        if received.tzinfo is None:
            raise InvalidInput("received_at must carry a time zone")
        if not 2000 <= received.year <= 2100:
            raise InvalidInput("received_at is out of range")
    transcript = data.get("transcript") or ""
    if not isinstance(transcript, str):
        raise InvalidInput("transcript must be a string")
    attachments = []
    if isinstance(data.get("recording_url"), str):
        attachments.append(
            Attachment(
                kind="audio",
                name="recording",
                location=data["recording_url"][:1000],
                meta={"duration": data.get("duration")},
            )
        )
    address = phone or caller or "anonymous"
    return Inbound(
        id=f"{CHANNEL}:hook:{hook_id}",
        channel=CHANNEL,
        address=address[:100],
        sender=Sender(id=address[:100], name=str(data.get("caller_name") or "")[:200] or None, phone=phone),
        kind=kind,
        text=transcript[:20_000] if kind == "voicemail" else "Пропущенный звонок",
        attachments=attachments,
        received_at=received,
        answerable=False,
        payload={"source": "webhook", "mailbox": data.get("mailbox")},
        raw=data,
    )


class SignedWebhook:
    """The generic voicemail webhook: the signature first, then the body."""

    def __init__(self, channel: Voicemail, secret: str) -> None:
        self.channel = channel
        self.secret = secret

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.post("/telephony/voicemail", self.hook)]

    async def open(self) -> None:
        """Nothing to start: the PBX calls the hub."""

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_hook(
                self.secret,
                request.headers.get("X-Adshub-Timestamp", ""),
                request.headers.get("X-Adshub-Signature", ""),
                body,
            )
        except ForgedInput as exc:
            log.warning("voicemail webhook refused: %s (from %s)", exc, request.remote)
            raise web.HTTPForbidden(text="wrong or stale signature") from None
        try:
            inbound = hook_inbound(jsontext.loads(body))
        except (ValueError, InvalidInput) as exc:
            raise web.HTTPBadRequest(text=f"invalid body: {exc}") from None
        journal = self.channel.journal
        cursor_name = f"hook:{inbound.id}"
        state = await journal.get_cursor(cursor_name)
        try:
            if not state:
                await self.channel.emit(inbound)
            elif not state.get("transcript") and inbound.text and inbound.kind == "voicemail":
                await self.channel.emit(transcript_edit(inbound, inbound.text))
        except TransientError:
            raise web.HTTPServiceUnavailable(text="try again later") from None
        await journal.set_cursor(cursor_name, {"transcript": bool(inbound.text)})
        return web.json_response({"ok": True, "id": inbound.id})
