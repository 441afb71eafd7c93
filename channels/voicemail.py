"""Voicemail and missed calls from the company's phone system.

Three sources, one channel:

(a) Asterisk: ``ADSHUB_VOICEMAIL_SPOOL`` is a voicemail context directory
    (``…/voicemail/<context>``). Every ``msgNNNN.txt`` in a mailbox's INBOX or
    Urgent folder becomes a voicemail; its transcript is ``msgNNNN.transcript.txt``
    beside it (written by the site's speech-to-text), and a transcript that
    arrives later is attached to the same voicemail.
(b) MANGO OFFICE: webhooks under ``/telephony/mango/events/…``, signed with
    ``sha256(vpbx_api_key + json + vpbx_api_salt)``; a summary without talk is a
    missed call; recognized recordings are fetched from the Mango API.
(c) Any other PBX: ``POST /telephony/voicemail`` with a JSON body signed by
    HMAC-SHA256 (see README).

A voicemail has no way back on its own channel: it is registered like any
message and the way back to the caller is the callback task (10 minutes).
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from adshub.contract import Attachment, Inbound, Outbound, Sender
from adshub.errors import ForgedInput, InvalidInput, PermanentDeliveryError, TransientError
from adshub.metrics import METRICS
from channels.base import ChannelContext, Publish, SendResult
from router.phones import normalize_phone

log = logging.getLogger("adshub.channels.voicemail")

FOLDERS = ("INBOX", "Urgent")
RECORDING_FORMATS = ("wav", "WAV", "gsm", "wav49", "mp3", "ogg")
CALLERID_RE = re.compile(r'^\s*"?(?P<name>[^"<]*?)"?\s*<(?P<number>[^>]*)>\s*$')
HOOK_MAX_SKEW = 300


# -- Asterisk ----------------------------------------------------------------------


@dataclass(frozen=True)
class SpoolMessage:
    key: str
    mailbox: str
    folder: str
    info: dict[str, str]
    transcript: str | None
    recording: Path | None
    path: Path


def parse_callerid(value: str) -> tuple[str | None, str | None]:
    """``"Name" <number>`` → (name, number); ``Unknown``/``Anonymous`` → no number."""
    value = (value or "").strip()
    match = CALLERID_RE.match(value)
    if match:
        name = match.group("name").strip() or None
        number = match.group("number").strip() or None
        return name, number
    if not value or value.lower() in ("unknown", "anonymous", "private", "<unknown>"):
        return None, None
    return None, value


def read_message_file(path: Path) -> dict[str, str]:
    """The ``[message]`` section of an Asterisk msgNNNN.txt. Raises InvalidInput."""
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, delimiters=("=",), comment_prefixes=(";", "#"), inline_comment_prefixes=None
    )
    try:
        parser.read_string(_read_text(path))
    except (configparser.Error, UnicodeError, OSError) as exc:
        raise InvalidInput(f"unreadable voicemail file {path.name}: {exc}") from exc
    if not parser.has_section("message"):
        raise InvalidInput(f"voicemail file {path.name} has no [message] section")
    return {k: v for k, v in parser.items("message")}


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    for charset in ("utf-8", "cp1251"):
        try:
            return data.decode(charset)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def scan_spool(spool: Path) -> list[SpoolMessage]:
    """Every voicemail in the context directory's INBOX and Urgent folders (blocking file I/O)."""
    found: list[SpoolMessage] = []
    if not spool.is_dir():
        return found
    for mailbox in sorted(p for p in spool.iterdir() if p.is_dir()):
        for folder in FOLDERS:
            directory = mailbox / folder
            if not directory.is_dir():
                continue
            for txt in sorted(directory.glob("msg[0-9][0-9][0-9][0-9].txt")):
                try:
                    info = read_message_file(txt)
                except InvalidInput as exc:
                    log.warning("%s", exc)
                    continue
                stem = txt.with_suffix("")
                transcript_path = stem.with_name(stem.name + ".transcript.txt")
                transcript = _read_text(transcript_path).strip() if transcript_path.is_file() else None
                recording = next(
                    (stem.with_suffix(f".{fmt}") for fmt in RECORDING_FORMATS if stem.with_suffix(f".{fmt}").is_file()),
                    None,
                )
                fallback = f"{info.get('origtime', '0')}-{mailbox.name}-{info.get('callerid', '')}"
                key = re.sub(r"[^A-Za-z0-9_-]", "_", info.get("msg_id") or fallback)
                found.append(
                    SpoolMessage(
                        key=key,
                        mailbox=mailbox.name,
                        folder=folder,
                        info=info,
                        transcript=transcript or None,
                        recording=recording,
                        path=txt,
                    )
                )
    return found


def spool_inbound(message: SpoolMessage, context: str) -> Inbound:
    name, number = parse_callerid(message.info.get("callerid", ""))
    phone = normalize_phone(number) if number else None
    caller = phone or number or "anonymous"
    received = _moment(message.info.get("origtime"))
    attachments = []
    if message.recording is not None:
        attachments.append(
            Attachment(
                kind="audio",
                name=message.recording.name,
                location=str(message.recording),
                meta={"duration": message.info.get("duration")},
            )
        )
    return Inbound(
        id=f"voicemail:asterisk:{context}:{message.key}",
        channel="voicemail",
        address=caller,
        sender=Sender(id=caller, name=name, phone=phone),
        kind="voicemail",
        text=message.transcript or "",
        attachments=attachments,
        received_at=received,
        answerable=False,
        payload={
            "source": "asterisk",
            "mailbox": message.mailbox,
            "folder": message.folder,
            "urgent": message.folder == "Urgent" or message.info.get("flag", "").lower() == "urgent",
            "duration": message.info.get("duration"),
            "file": str(message.path),
        },
        raw=message.info,
    )


def transcript_edit(original: Inbound, transcript: str) -> Inbound:
    """A transcript that arrived after the voicemail was taken in."""
    digest = hashlib.sha256(transcript.encode()).hexdigest()[:12]
    return Inbound(
        id=f"{original.id}:transcript:{digest}",
        channel=original.channel,
        address=original.address,
        sender=original.sender,
        kind="edit",
        text=transcript,
        received_at=datetime.now(UTC),
        edit_of=original.id,
        answerable=False,
        payload={"source": original.payload.get("source"), "transcript": True},
    )


# -- MANGO OFFICE ------------------------------------------------------------------


def mango_sign(key: str, body: str, salt: str) -> str:
    return hashlib.sha256(f"{key}{body}{salt}".encode()).hexdigest()


def verify_mango(form: dict[str, str], key: str, salt: str) -> dict[str, Any]:
    """Check the key and the signature of a Mango notification in constant time; returns the JSON."""
    given_key = form.get("vpbx_api_key", "")
    given_sign = form.get("sign", "")
    body = form.get("json")
    if body is None:
        raise InvalidInput("the form has no json field")
    expected = mango_sign(key, body, salt)
    key_ok = hmac.compare_digest(given_key.encode(), key.encode())
    sign_ok = hmac.compare_digest(given_sign.lower().encode(), expected.encode())
    if not (key_ok and sign_ok):
        raise ForgedInput("wrong vpbx_api_key or sign")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidInput(f"json is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("json is not an object")
    return data


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _moment(*values: Any) -> datetime:
    """The first plausible unix timestamp among ``values`` (seconds or milliseconds), else now."""
    for value in values:
        number = _int(value)
        if number > 10**11:
            number //= 1000
        if 946684800 <= number <= 4102444800:
            return datetime.fromtimestamp(number, UTC)
    return datetime.now(UTC)


def missed_call(summary: dict[str, Any]) -> Inbound | None:
    """A summary of an incoming call nobody talked on is a missed call with a callback due."""
    if not isinstance(summary, dict):
        raise InvalidInput("summary is not an object")
    if _int(summary.get("call_direction"), 1) != 1 or _int(summary.get("talk_time")) != 0:
        return None
    entry = str(summary.get("entry_id") or "")[:200]
    if not entry:
        raise InvalidInput("summary without entry_id")
    caller_info = summary.get("from") if isinstance(summary.get("from"), dict) else {}
    number = str(caller_info.get("number") or "")[:40]
    phone = normalize_phone(number) if number else None
    caller = phone or number or "anonymous"
    try:
        return _missed(summary, entry, caller, phone)
    except ValueError as exc:
        raise InvalidInput(f"summary not understood: {exc}") from exc


def _missed(summary: dict[str, Any], entry: str, caller: str, phone: str | None) -> Inbound:
    when = _moment(summary.get("end_time"), summary.get("create_time"))
    return Inbound(
        id=f"voicemail:mango:missed:{entry}",
        channel="voicemail",
        address=caller,
        sender=Sender(id=caller, phone=phone),
        kind="missed_call",
        text="Пропущенный звонок",
        received_at=when,
        answerable=False,
        payload={
            "source": "mango",
            "entry_id": entry,
            "line": summary.get("line_number"),
            "disconnect_reason": summary.get("disconnect_reason"),
        },
        raw=summary,
    )


def transcript_text(response: dict[str, Any], request_id: str) -> str | None:
    """The caller's words from a /transcribes/tasks/ or /queries/recording_transcripts answer."""
    data = response.get("data")
    if isinstance(data, dict):
        task = data.get(str(request_id)) or data.get(request_id)  # type: ignore[call-overload]
        if isinstance(task, dict):
            channels = [t for t in task.get("transcribes") or [] if isinstance(t, dict)]
            client = [t for t in channels if t.get("channel") == "client"] or channels
            words = [str(w.get("word", "")) for t in client for w in t.get("data") or [] if isinstance(w, dict)]
            text = " ".join(w for w in words if w)
            return re.sub(r"\s+([.,!?])", r"\1", text).strip() or None
    if isinstance(data, list):
        phrases = [p for item in data if isinstance(item, dict) for p in item.get("phrases") or []]
        client = [str(p[1]) for p in phrases if isinstance(p, list) and len(p) == 2 and p[0] == "client"]
        return " ".join(client).strip() or None
    return None


# -- the generic signed webhook ----------------------------------------------------


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
        id=f"voicemail:hook:{hook_id}",
        channel="voicemail",
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


# -- the channel -------------------------------------------------------------------


class Voicemail:
    """Voicemail intake from Asterisk, MANGO OFFICE and any PBX that can sign a webhook."""

    name: ClassVar[str] = "voicemail"
    local_delivery: ClassVar[bool] = False

    def __init__(self, context: ChannelContext) -> None:
        s = context.settings
        self.context = context
        self.settings = s
        self.spool = Path(s.voicemail_spool) if s.voicemail_spool else None
        self.mango_key = s.mango_api_key.get_secret_value()
        self.mango_salt = s.mango_api_salt.get_secret_value()
        self.hook_secret = s.voicemail_webhook_secret.get_secret_value()
        self._publish: Publish | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def configured(cls, settings: Any) -> bool:
        return bool(
            settings.voicemail_spool
            or settings.mango_api_key.get_secret_value()
            or settings.voicemail_webhook_secret.get_secret_value()
        )

    def routes(self) -> list[web.AbstractRouteDef]:
        routes: list[web.AbstractRouteDef] = []
        if self.mango_key:
            routes.append(web.post("/telephony/mango/events/{event:.+}", self.mango_event))
        if self.hook_secret:
            routes.append(web.post("/telephony/voicemail", self.hook))
        return routes

    async def start(self, publish: Publish) -> None:
        self._publish = publish
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        if self.spool is not None:
            self._task = asyncio.create_task(self._watch_spool(), name="asterisk-spool")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 15)
        if self._http is not None:
            await self._http.close()

    async def send(self, outbound: Outbound) -> SendResult:
        raise PermanentDeliveryError("a voicemail has no way back on its channel; the callback task is")

    async def _emit(self, inbound: Inbound) -> None:
        assert self._publish is not None
        await self._publish(inbound)
        METRICS.messages_in.labels(channel=self.name).inc()

    # (a) Asterisk

    @property
    def spool_cursor(self) -> str:
        return f"asterisk:{self.spool}"

    async def _watch_spool(self) -> None:
        assert self.spool is not None
        context = self.spool.name
        while not self._stopping.is_set():
            try:
                await self._scan_once(context)
            except TransientError as exc:
                log.warning("broker unavailable; voicemail will be taken on the next scan: %s", exc)
            except Exception:
                log.exception("voicemail spool scan failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.voicemail_poll_seconds)

    async def _scan_once(self, context: str) -> None:
        assert self.spool is not None
        messages = await asyncio.to_thread(scan_spool, self.spool)
        cursor = await self.context.journal.get_cursor(self.spool_cursor)
        taken: dict[str, bool] = dict(cursor.get("taken") or {})
        changed = False
        for message in messages:
            state = taken.get(message.key)
            try:
                inbound = spool_inbound(message, context)
            except ValueError as exc:
                log.warning("voicemail %s refused: %s", message.path, exc)
                taken[message.key] = True
                changed = True
                continue
            if state is None:
                await self._emit(inbound)
                taken[message.key] = bool(message.transcript)
                changed = True
            elif state is False and message.transcript:
                await self._emit(transcript_edit(inbound.model_copy(update={"text": ""}), message.transcript))
                taken[message.key] = True
                changed = True
            if changed:
                await self.context.journal.set_cursor(self.spool_cursor, {"taken": _bounded(taken)})
                changed = False

    # (b) MANGO OFFICE

    async def mango_event(self, request: web.Request) -> web.Response:
        try:
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            data = verify_mango(form, self.mango_key, self.mango_salt)
        except ForgedInput as exc:
            log.warning("Mango notification refused: %s (from %s)", exc, request.remote)
            raise web.HTTPForbidden(text="wrong signature") from None
        except InvalidInput as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        event = request.match_info["event"].strip("/")
        try:
            await self._mango(event, data)
        except InvalidInput as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        except TransientError:
            raise web.HTTPServiceUnavailable(text="try again later") from None
        return web.json_response({"result": 1000})

    async def _mango(self, event: str, data: dict[str, Any]) -> None:
        journal = self.context.journal
        entry = str(data.get("entry_id") or "")
        if event == "call" and entry:
            seq = _int(data.get("seq"))
            state = await journal.get_cursor(f"mango:{entry}")
            if seq <= _int(state.get("seq"), -1):
                return
            values: dict[str, Any] = {"seq": seq, "state": data.get("call_state")}
            number = (data.get("from") or {}).get("number")
            if number:
                values["from"] = str(number)
            await journal.set_cursor(f"mango:{entry}", values)
        elif event == "summary":
            inbound = missed_call(data)
            if inbound is not None:
                await self._emit(inbound)
            number = (data.get("from") or {}).get("number")
            if entry and number:
                await journal.set_cursor(f"mango:{entry}", {"from": str(number), "summary": True})
        elif event == "recording" and entry:
            if data.get("recording_id"):
                await journal.set_cursor(f"mango-recording:{data['recording_id']}", {"entry_id": entry})
            if data.get("request_id"):
                await journal.set_cursor(f"mango-request:{data['request_id']}", {"entry_id": entry})
        elif event in ("recognized/offline", "recognized_offline", "recognized"):
            await self._recognized(data)

    async def _recognized(self, data: dict[str, Any]) -> None:
        request_id = str(data.get("request_id") or "")
        if not request_id:
            raise InvalidInput("recognized event without request_id")
        if _int(data.get("result"), 1000) != 1000:
            log.warning("Mango speech recognition failed with result %s", data.get("result"))
            return
        body = json.dumps({"request_ids": [request_id]}, separators=(",", ":"))
        form = {"vpbx_api_key": self.mango_key, "sign": mango_sign(self.mango_key, body, self.mango_salt), "json": body}
        assert self._http is not None
        try:
            async with self._http.post(f"{self.settings.mango_api_base}/transcribes/tasks/", data=form) as response:
                if response.status >= 500 or response.status == 429:
                    raise TransientError(f"Mango API answered {response.status}")
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"Mango API unavailable: {exc}") from exc
        text = transcript_text(payload if isinstance(payload, dict) else {}, request_id)
        link = await self.context.journal.get_cursor(f"mango-request:{request_id}")
        entry = str(link.get("entry_id") or "")
        call = await self.context.journal.get_cursor(f"mango:{entry}") if entry else {}
        number = str(call.get("from") or "")
        phone = normalize_phone(number) if number else None
        caller = phone or number or f"mango-request-{request_id}"
        when = _moment(data.get("recognized"))
        await self._emit(
            Inbound(
                id=f"voicemail:mango:recognized:{request_id}",
                channel="voicemail",
                address=caller,
                sender=Sender(id=caller, phone=phone),
                kind="voicemail",
                text=text or "",
                received_at=when,
                answerable=False,
                payload={"source": "mango", "request_id": request_id, "entry_id": entry or None},
                raw=data,
            )
        )

    # (c) the generic signed webhook

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_hook(
                self.hook_secret,
                request.headers.get("X-Adshub-Timestamp", ""),
                request.headers.get("X-Adshub-Signature", ""),
                body,
            )
        except ForgedInput as exc:
            log.warning("voicemail webhook refused: %s (from %s)", exc, request.remote)
            raise web.HTTPForbidden(text="wrong or stale signature") from None
        try:
            inbound = hook_inbound(json.loads(body))
        except (ValueError, InvalidInput) as exc:
            raise web.HTTPBadRequest(text=f"invalid body: {exc}") from None
        cursor_name = f"hook:{inbound.id}"
        state = await self.context.journal.get_cursor(cursor_name)
        try:
            if not state:
                await self._emit(inbound)
            elif not state.get("transcript") and inbound.text and inbound.kind == "voicemail":
                await self._emit(transcript_edit(inbound, inbound.text))
        except TransientError:
            raise web.HTTPServiceUnavailable(text="try again later") from None
        await self.context.journal.set_cursor(cursor_name, {"transcript": bool(inbound.text)})
        return web.json_response({"ok": True, "id": inbound.id})


def _bounded(taken: dict[str, bool], limit: int = 20_000) -> dict[str, bool]:
    if len(taken) <= limit:
        return taken
    return dict(list(taken.items())[-limit:])
