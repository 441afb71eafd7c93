"""The chat on the company's website: a widget any site can embed with one
``<script src=".../chat/widget.js">`` tag, talking JSON frames over a WebSocket.

client → ``{"type":"message","id":"<client message id>","text":"..."}``
server → ``{"type":"ack","id":...}`` once the broker has the message,
         ``{"type":"message","id":...,"text":...,"from":"hub"|"dispatcher","request":{...}}``,
         ``{"type":"history","messages":[...]}`` on connect,
         ``{"type":"error","code":...,"message":...}`` for a bad frame; the socket stays open.

The journal is the mailbox: a reply produced while the resident was away is
shown from the history when the widget reconnects.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict, defaultdict
from typing import Any, ClassVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiohttp import WSMsgType, web
from pydantic import Field

from adshub import jsontext
from adshub.contract import MAX_TEXT, ChannelProfile, Inbound, Outbound, Sender, utcnow
from adshub.errors import InvalidInput, TransientError
from adshub.logs import redact
from adshub.metrics import METRICS
from adshub.ratelimit import RateLimiter
from adshub.settings import ChannelSettings, Settings
from adshub.web import render
from channels.base import BaseChannel, ChannelContext, SendResult
from templates import TEMPLATES_DIR

log = logging.getLogger("adshub.channels.webchat")

SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
redact(re.compile(r"(?<=webchat:)[A-Za-z0-9_-]{8,64}"))
"""A session id is the only credential for a resident's history and address: logs carry its hash."""
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
MAX_FRAME_BYTES = MAX_TEXT * 6 + 4096
"""A frame with the longest text, whichever way its JSON escapes the letters (\\uXXXX is six bytes)."""
MAX_TEXT_CHARS = MAX_TEXT
HISTORY_TIMEOUT = 2.0
"""History is a convenience: with the database away the chat still takes messages (they wait on the bus)."""
MAX_SOCKET_MESSAGE = 1024 * 1024
"""Bigger frames close the socket (1009); up to this size a clear error frame answers."""

ERRORS = {
    "bad_json": "Сообщение не распознано: ожидается JSON.",
    "bad_frame": "Сообщение не распознано: нет поля type.",
    "unknown_type": "Неизвестный тип сообщения.",
    "bad_id": "У сообщения нет корректного id.",
    "empty_text": "Пустое сообщение: напишите, что случилось.",
    "too_long": f"Сообщение слишком длинное: не больше {MAX_TEXT_CHARS} символов.",
    "too_large": "Сообщение слишком большое.",
    "rate_limited": "Слишком много сообщений подряд. Подождите немного и попробуйте снова.",
    "unavailable": "Сервис временно недоступен, сообщение не принято. Попробуйте отправить ещё раз.",
}


class FrameError(Exception):
    def __init__(self, code: str, client_id: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.client_id = client_id


def parse_frame(raw: str) -> dict[str, Any]:
    """Validate one client frame; raises FrameError with a code the widget can show."""
    if len(raw.encode("utf-8", errors="replace")) > MAX_FRAME_BYTES:
        raise FrameError("too_large")
    try:
        frame = jsontext.loads(raw)
    except InvalidInput:
        raise FrameError("bad_json") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameError("bad_frame")
    kind = frame["type"]
    client_id = frame.get("id")
    if kind in ("ping", "history"):
        return {"type": kind}
    if kind not in ("message", "button"):
        raise FrameError("unknown_type", client_id if isinstance(client_id, str) else None)
    if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
        raise FrameError("bad_id")
    if kind == "button":
        data = frame.get("data")
        if not isinstance(data, str) or not 0 < len(data) <= 64:
            raise FrameError("bad_frame", client_id)
        return {"type": "button", "id": client_id, "data": data}
    text = frame.get("text")
    if not isinstance(text, str) or not text.strip():
        raise FrameError("empty_text", client_id)
    if len(text) > MAX_TEXT_CHARS:
        raise FrameError("too_long", client_id)
    return {"type": "message", "id": client_id, "text": text.strip()}


def error_frame(code: str, client_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": ERRORS.get(code, code)}
    if client_id:
        frame["id"] = client_id
    return frame


def outbound_frame(outbound: Outbound, tz: ZoneInfo | None = None) -> dict[str, Any]:
    """A reply as the widget shows it; the deadline is written out in the company's time zone (``tz``), so a
    resident abroad reads the same time the company means."""
    frame: dict[str, Any] = {
        "type": "message",
        "id": outbound.id,
        "text": outbound.text,
        "from": "hub" if outbound.author in (None, "hub") else "dispatcher",
        "at": outbound.created_at.isoformat(),
    }
    if outbound.request_number and outbound.kind == "registration":
        deadline = outbound.deadline.isoformat() if outbound.deadline else None
        frame["request"] = {"number": outbound.request_number, "deadline": deadline}
        if outbound.deadline and tz is not None:
            frame["request"]["deadline_text"] = outbound.deadline.astimezone(tz).strftime("%d.%m.%Y %H:%M")
    if outbound.files:
        frame["files"] = [
            {"name": f.name, "url": f"/chat/files/{quote(outbound.id, safe='')}/{index}"}
            for index, f in enumerate(outbound.files)
        ]
    if outbound.buttons:
        frame["buttons"] = [[b.model_dump() for b in row] for row in outbound.buttons]
    return frame


class WebChatSettings(ChannelSettings):
    """The chat is on unless ``ADSHUB_CHAT_ENABLED=false`` (a process that serves no residents' pages)."""

    chat_enabled: bool = True
    chat_allowed_origins: str = ""
    chat_rate_per_minute: int = Field(20, ge=1)
    """Messages and button presses per session."""
    chat_ip_rate_per_minute: int = Field(120, ge=1)
    """Messages and button presses per address."""
    chat_frames_per_minute: int = Field(120, ge=1)
    """Frames of any kind (pings, history requests included) per session."""
    chat_history_per_minute: int = Field(10, ge=1)
    """History reads per session; each is a database read."""
    chat_history_per_second: int = Field(100, ge=1)
    """History reads of the whole process."""
    chat_sockets_per_address: int = Field(20, ge=1)
    """Open sockets from one address."""

    @property
    def allowed_origins(self) -> set[str]:
        return {o.strip().rstrip("/") for o in self.chat_allowed_origins.split(",") if o.strip()}


class WebChat(BaseChannel):
    """The web chat channel: intake over WebSocket, replies pushed to this process's open sockets."""

    name: ClassVar[str] = "webchat"
    profile: ClassVar[ChannelProfile] = ChannelProfile("webchat", "Чат на сайте", local_delivery=True, sends_files=True)
    settings_model: ClassVar[type[ChannelSettings]] = WebChatSettings

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        config: WebChatSettings = self.config_of(context.settings)
        self.config = config
        self._sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self._pushed: OrderedDict[str, None] = OrderedDict()
        self._session_limits = RateLimiter(config.chat_rate_per_minute)
        self._ip_limits = RateLimiter(config.chat_ip_rate_per_minute)
        self._frame_limits = RateLimiter(config.chat_frames_per_minute)
        self._history_limits = RateLimiter(config.chat_history_per_minute)
        self._history_total = RateLimiter(config.chat_history_per_second, per=1.0)
        self._per_address: dict[str, int] = defaultdict(int)

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return bool(cls.config_of(settings).chat_enabled)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/chat", self.page),
            web.get("/chat/widget.js", self.widget),
            web.get("/chat/ws", self.socket),
            web.get("/chat/files/{message}/{index}", self.file),
        ]

    async def file(self, request: web.Request) -> web.StreamResponse:
        """A file a dispatcher attached to a reply. The reply's id is its capability: random, and told only
        to the resident's own session."""
        message_id = request.match_info["message"]
        index = request.match_info["index"]
        if not message_id.startswith("dispatcher:") or not index.isdigit():
            raise web.HTTPNotFound(text="Файл не найден")
        files = await self.journal.reply_files(message_id, self.name)
        if int(index) >= len(files):
            raise web.HTTPNotFound(text="Файл не найден")
        found = await self.journal.read_file(str(files[int(index)]["ref"]))
        if found is None:
            raise web.HTTPNotFound(text="Файл не найден")
        data, _, _ = found
        return web.Response(
            body=data,
            content_type="application/octet-stream",
            headers={
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(str(files[int(index)]['name']))}",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox",
            },
        )

    def pages(self) -> dict[str, str]:
        return {"chat": "/chat"}

    async def close(self) -> None:
        for sockets in list(self._sockets.values()):
            for ws in list(sockets):
                await ws.close(code=1001, message=b"server shutting down")

    # -- delivery -------------------------------------------------------------

    async def send(self, outbound: Outbound) -> SendResult:
        if outbound.id in self._pushed:
            METRICS.duplicates.labels(stage="delivery").inc()
            return "sent"
        sockets = [ws for ws in self._sockets.get(outbound.address, ()) if not ws.closed]
        if not sockets:
            return "queued"
        frame = outbound_frame(outbound, self.settings.zone)
        delivered = False
        for ws in sockets:
            try:
                await ws.send_json(frame)
                delivered = True
            except (ConnectionError, RuntimeError):
                continue
        if delivered:
            self._pushed[outbound.id] = None
            if len(self._pushed) > 50_000:
                self._pushed.popitem(last=False)
            return "sent"
        return "queued"

    # -- HTTP -----------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return render(request, "chat/page.html", {"company": self.settings.company_name})

    async def widget(self, request: web.Request) -> web.StreamResponse:
        body = (TEMPLATES_DIR / "chat" / "widget.js").read_text(encoding="utf-8")
        return web.Response(
            text=body,
            content_type="application/javascript",
            headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
        )

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if not origin:
            return True
        allowed = self.config.allowed_origins
        if "*" in allowed or origin.rstrip("/") in allowed:
            return True
        own = f"{request.scheme}://{request.host}"
        return origin.rstrip("/") == own

    async def socket(self, request: web.Request) -> web.StreamResponse:
        session = request.query.get("session", "")
        if not SESSION_RE.match(session):
            raise web.HTTPBadRequest(text="session must be 8-64 characters of A-Z a-z 0-9 _ -")
        if not self._origin_allowed(request):
            log.warning("web chat connection from a foreign origin refused: %s", request.headers.get("Origin"))
            raise web.HTTPForbidden(text="origin not allowed")
        ip = request.remote or "?"
        if self._per_address[ip] >= self.config.chat_sockets_per_address:
            raise web.HTTPTooManyRequests(text="too many chat connections from this address")
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_SOCKET_MESSAGE)
        await ws.prepare(request)
        self._sockets[session].add(ws)
        self._per_address[ip] += 1
        try:
            if request.query.get("fresh") == "1":
                await ws.send_json({"type": "history", "messages": []})
            elif self._history_limits.allow(session) and self._history_total.allow("all"):
                await self._send_history(ws, session)
            else:
                await ws.send_json({"type": "history", "messages": [], "unavailable": True})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_frame(ws, session, ip, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_json(error_frame("bad_json"))
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets[session].discard(ws)
            if not self._sockets[session]:
                self._sockets.pop(session, None)
            self._per_address[ip] -= 1
            if self._per_address[ip] <= 0:
                self._per_address.pop(ip, None)
        return ws

    async def _on_frame(self, ws: web.WebSocketResponse, session: str, ip: str, raw: str) -> None:
        try:
            frame = parse_frame(raw)
        except FrameError as exc:
            await ws.send_json(error_frame(exc.code, exc.client_id))
            return
        if not self._frame_limits.allow(session):
            await ws.send_json(error_frame("rate_limited", frame.get("id")))
            return
        if frame["type"] == "ping":
            await ws.send_json({"type": "pong"})
            return
        if frame["type"] == "history":
            if not (self._history_limits.allow(session) and self._history_total.allow("all")):
                await ws.send_json(error_frame("rate_limited"))
                return
            await self._send_history(ws, session)
            return
        client_id = frame["id"]
        if not self._session_limits.allow(session) or not self._ip_limits.allow(ip):
            await ws.send_json(error_frame("rate_limited", client_id))
            return
        inbound = Inbound(
            id=f"webchat:{session}:{client_id}",
            channel=self.name,
            address=session,
            sender=Sender(id=session),
            kind="callback" if frame["type"] == "button" else "message",
            text=frame.get("text", ""),
            payload={"data": frame["data"]} if frame["type"] == "button" else {},
            received_at=utcnow(),
            raw={"frame": frame, "ip": ip},
        )
        try:
            await self.emit(inbound)
        except (TransientError, RuntimeError) as exc:
            log.warning("web chat message not accepted: %s", exc, extra={"message_id": inbound.id})
            await ws.send_json(error_frame("unavailable", client_id))
            return
        await ws.send_json({"type": "ack", "id": client_id})

    async def _send_history(self, ws: web.WebSocketResponse, session: str) -> None:
        try:
            docs = await self.journal.history(f"{self.name}:{session}", timeout=HISTORY_TIMEOUT)
        except Exception as exc:
            log.warning("web chat history unavailable: %s", exc)
            await ws.send_json({"type": "history", "messages": [], "unavailable": True})
            return
        messages = []
        outbounds: list[Outbound] = []
        for doc in docs:
            if doc["direction"] == "in":
                if doc.get("kind") != "message":
                    continue
                client_id = doc["_id"].split(":", 2)[-1]
                messages.append(
                    {"id": client_id, "from": "resident", "text": doc.get("text", ""), "at": doc["at"].isoformat()}
                )
            else:
                outbound = Outbound.model_validate(doc["outbound"])
                messages.append(outbound_frame(outbound, self.settings.zone))
                outbounds.append(outbound)
        await ws.send_json({"type": "history", "messages": messages})
        if outbounds:
            try:
                known = await self.journal.delivered_ids([o.id for o in outbounds])
                shown = [o for o in outbounds if o.id not in known]
                await self.journal.record_deliveries(shown, "sent", utcnow())
            except Exception as exc:
                log.warning("could not record replies shown from history: %s", exc)
