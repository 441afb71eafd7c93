"""A stand-in of the Telegram Bot API on loopback, written from core.telegram.org/bots/api.

It serves the methods the hub uses (getMe, getUpdates with offsets and long
polling, setWebhook, deleteWebhook, sendMessage, answerCallbackQuery, getFile,
file downloads) and can misbehave on purpose: 429 with retry_after, 5xx
outages, a user who blocked the bot.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = {"id": 5550001111, "is_bot": True, "first_name": "Аварийная служба", "username": "TestDispatchBot"}


@dataclass
class TelegramStandIn:
    token: str
    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    answered_callbacks: list[str] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    webhook: dict[str, Any] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    blocked_chats: set[str] = field(default_factory=set)
    rate_limited: int = 0
    """How many of the next sendMessage calls answer 429."""
    down_until: float = 0.0
    """Until this monotonic time every method answers 502 Bad Gateway."""
    confirmed_offset: int = 0
    refused: int = 0
    """Calls answered 502 during an outage."""
    _new_update: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1000))
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_update(self, update: dict[str, Any]) -> None:
        self.updates.append(update)
        self._new_update.set()

    def outage(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self.method)
        app.router.add_get("/file/bot{token}/{path:.+}", self.file)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data = await request.json()
            return dict(data)
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, str):
                params[key] = value
            elif getattr(value, "filename", None):
                params[key] = {"filename": value.filename, "data": value.file.read()}
            else:
                params[key] = value.file.read().decode()  # type: ignore[union-attr]
        params.update(request.query)
        return params

    async def method(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        name = request.match_info["method"]
        self.calls.append(name)
        if time.monotonic() < self.down_until:
            self.refused += 1
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        params = await self._params(request)
        handler = getattr(self, f"api_{name}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        return await handler(params)

    @staticmethod
    def ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    async def api_getMe(self, params: dict[str, Any]) -> web.Response:
        return self.ok(BOT_USER)

    async def api_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook = {}
        return self.ok(True)

    async def api_setWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook = dict(params)
        return self.ok(True)

    async def api_getUpdates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook:
            return web.json_response(
                {"ok": False, "error_code": 409, "description": "Conflict: webhook is active"}, status=409
            )
        offset = int(params.get("offset") or 0)
        if offset:
            self.confirmed_offset = max(self.confirmed_offset, offset)
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        timeout = min(float(params.get("timeout") or 0), 5.0)
        deadline = time.monotonic() + timeout
        while not self.updates and time.monotonic() < deadline:
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return self.ok(list(self.updates[:100]))

    async def api_sendMessage(self, params: dict[str, Any]) -> web.Response:
        chat_id = str(params.get("chat_id"))
        if chat_id in self.blocked_chats:
            return web.json_response(
                {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}, status=403
            )
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                },
                status=429,
            )
        markup = params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        message = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "from": BOT_USER,
            "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id, "type": "private"},
            "text": params.get("text", ""),
        }
        self.sent.append({"chat_id": chat_id, "text": params.get("text", ""), "reply_markup": markup})
        return self.ok(message)

    async def api_sendDocument(self, params: dict[str, Any]) -> web.Response:
        """A file as a multipart upload: the field itself, or ``attach://<name>`` naming the part (Bot API)."""
        chat_id = str(params.get("chat_id"))
        document = params.get("document")
        if isinstance(document, str) and document.startswith("attach://"):
            document = params.get(document.removeprefix("attach://"))
        if not isinstance(document, dict):
            return web.json_response(
                {"ok": False, "error_code": 400, "description": "Bad Request: there is no document in the request"},
                status=400,
            )
        file_id = f"doc{next(self._ids)}"
        self.documents.append(
            {
                "chat_id": chat_id,
                "filename": document["filename"],
                "data": document["data"],
                "caption": params.get("caption"),
            }
        )
        message = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "from": BOT_USER,
            "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id, "type": "private"},
            "document": {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "file_name": document["filename"],
                "file_size": len(document["data"]),
            },
        }
        return self.ok(message)

    async def api_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        self.answered_callbacks.append(str(params.get("callback_query_id")))
        return self.ok(True)

    async def api_getFile(self, params: dict[str, Any]) -> web.Response:
        file_id = str(params.get("file_id"))
        if file_id not in self.files:
            return web.json_response(
                {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}, status=400
            )
        path, data = self.files[file_id]
        return self.ok({"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": len(data), "file_path": path})

    async def file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            raise web.HTTPUnauthorized()
        path = request.match_info["path"]
        for stored_path, data in self.files.values():
            if stored_path == path:
                return web.Response(body=data, content_type="application/octet-stream")
        raise web.HTTPNotFound()

    def sent_to(self, chat_id: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["chat_id"] == str(chat_id)]


def message_update(update_id: int, chat_id: int, message_id: int, text: str, **extra: Any) -> dict[str, Any]:
    """A current-style private message update (with the fields aiogram requires)."""
    user = {"id": chat_id, "is_bot": False, "first_name": "Ирина", "language_code": "ru"}
    message = {
        "message_id": message_id,
        "from": user,
        "chat": {"id": chat_id, "first_name": "Ирина", "type": "private"},
        "date": int(time.time()),
        "text": text,
    }
    message.update(extra)
    if "text" in extra and extra["text"] is None:
        message.pop("text")
    return {"update_id": update_id, "message": message}
