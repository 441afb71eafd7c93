"""MANGO OFFICE (ВАТС API v1.9): signed webhooks under ``/telephony/mango/events/…``.

Notifications are forms with ``vpbx_api_key``, ``sign`` = ``sha256(key + json + salt)`` and ``json``;
call events are deduplicated and ordered by ``seq``; a summary of an incoming call
without talk is a missed call; a recognized recording is fetched from
``/transcribes/tasks/`` and becomes a voicemail. The caller of a recognition
request is known when an event linked the request id to a call (``entry_id``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from adshub import jsontext
from adshub.contract import Inbound, Sender
from adshub.errors import ForgedInput, InvalidInput, TransientError
from adshub.web import read_form
from channels.voicemail.calls import CHANNEL, as_int, moment
from domain.phones import normalize_phone

if TYPE_CHECKING:
    from channels.voicemail import Voicemail

log = logging.getLogger("adshub.channels.voicemail.mango")


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
    data = jsontext.loads(body)
    if not isinstance(data, dict):
        raise InvalidInput("json is not an object")
    return data


def missed_call(summary: dict[str, Any]) -> Inbound | None:
    """A summary of an incoming call nobody talked on is a missed call with a callback due."""
    if not isinstance(summary, dict):
        raise InvalidInput("summary is not an object")
    if as_int(summary.get("call_direction"), 1) != 1 or as_int(summary.get("talk_time")) != 0:
        return None
    entry = str(summary.get("entry_id") or "")[:200]
    if not entry:
        raise InvalidInput("summary without entry_id")
    number = (_caller_number(summary) or "")[:40]
    phone = normalize_phone(number) if number else None
    caller = phone or number or "anonymous"
    try:
        return _missed(summary, entry, caller, phone)
    except ValueError as exc:
        raise InvalidInput(f"summary not understood: {exc}") from exc


def _missed(summary: dict[str, Any], entry: str, caller: str, phone: str | None) -> Inbound:
    when = moment(summary.get("end_time"), summary.get("create_time"))
    return Inbound(
        id=f"{CHANNEL}:mango:missed:{entry}",
        channel=CHANNEL,
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
        task = data.get(str(request_id))
        if isinstance(task, dict):
            channels = [t for t in task.get("transcribes") or [] if isinstance(t, dict)]
            client = [t for t in channels if t.get("channel") == "client"] or channels
            words: list[str] = []
            for transcribe in client:
                words.extend(str(w.get("word", "")) for w in transcribe.get("data") or [] if isinstance(w, dict))
            text = " ".join(w for w in words if w)
            return re.sub(r"\s+([.,!?])", r"\1", text).strip() or None
    if isinstance(data, list):
        phrases = [p for item in data if isinstance(item, dict) for p in item.get("phrases") or []]
        said = [str(p[1]) for p in phrases if isinstance(p, list) and len(p) == 2 and p[0] == "client"]
        return " ".join(said).strip() or None
    return None


def _caller_number(data: dict[str, Any]) -> str | None:
    caller = data.get("from")
    number = caller.get("number") if isinstance(caller, dict) else None
    return str(number) if number else None


class MangoOffice:
    """The MANGO OFFICE webhooks, and the API call that fetches a recognized recording's text."""

    def __init__(self, channel: Voicemail, key: str, salt: str, api_base: str) -> None:
        self.channel = channel
        self.key = key
        self.salt = salt
        self.api_base = api_base

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.post("/telephony/mango/events/{event:.+}", self.event)]

    async def open(self) -> None:
        """Nothing to start: MANGO OFFICE calls the hub."""

    async def event(self, request: web.Request) -> web.Response:
        try:
            form = {k: v for k, v in (await read_form(request)).items() if isinstance(v, str)}
            data = verify_mango(form, self.key, self.salt)
        except ForgedInput as exc:
            log.warning("Mango notification refused: %s (from %s)", exc, request.remote)
            raise web.HTTPForbidden(text="wrong signature") from None
        except InvalidInput as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        event = request.match_info["event"].strip("/")
        try:
            await self.handle(event, data)
        except InvalidInput as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        except TransientError:
            raise web.HTTPServiceUnavailable(text="try again later") from None
        return web.json_response({"result": 1000})

    async def handle(self, event: str, data: dict[str, Any]) -> None:
        journal = self.channel.journal
        entry = str(data.get("entry_id") or "")
        if event == "call" and entry:
            seq = as_int(data.get("seq"))
            state = await journal.get_cursor(f"mango:{entry}")
            if seq <= as_int(state.get("seq"), -1):
                return
            values: dict[str, Any] = {"seq": seq, "state": data.get("call_state")}
            number = _caller_number(data)
            if number:
                values["from"] = number
            await journal.set_cursor(f"mango:{entry}", values)
        elif event == "summary":
            inbound = missed_call(data)
            if inbound is not None:
                await self.channel.emit(inbound)
            number = _caller_number(data)
            if entry and number:
                await journal.set_cursor(f"mango:{entry}", {"from": number, "summary": True})
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
        if as_int(data.get("result"), 1000) != 1000:
            log.warning("Mango speech recognition failed with result %s", data.get("result"))
            return
        body = json.dumps({"request_ids": [request_id]}, separators=(",", ":"))
        form = {"vpbx_api_key": self.key, "sign": mango_sign(self.key, body, self.salt), "json": body}
        try:
            async with self.channel.http.post(f"{self.api_base}/transcribes/tasks/", data=form) as response:
                if response.status >= 500 or response.status == 429:
                    raise TransientError(f"Mango API answered {response.status}")
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"Mango API unavailable: {exc}") from exc
        text = transcript_text(payload if isinstance(payload, dict) else {}, request_id)
        journal = self.channel.journal
        link = await journal.get_cursor(f"mango-request:{request_id}")
        entry = str(link.get("entry_id") or "")
        call = await journal.get_cursor(f"mango:{entry}") if entry else {}
        number = str(call.get("from") or "")
        phone = normalize_phone(number) if number else None
        caller = phone or number or f"mango-request-{request_id}"
        await self.channel.emit(
            Inbound(
                id=f"{CHANNEL}:mango:recognized:{request_id}",
                channel=CHANNEL,
                address=caller,
                sender=Sender(id=caller, phone=phone),
                kind="voicemail",
                text=text or "",
                received_at=moment(data.get("recognized")),
                answerable=False,
                payload={"source": "mango", "request_id": request_id, "entry_id": entry or None},
                raw=data,
            )
        )
