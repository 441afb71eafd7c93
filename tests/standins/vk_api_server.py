"""A stand-in of the VK API and its Bots Long Poll server on loopback, from dev.vk.com.

Methods: groups.getLongPollServer, messages.send (which, like VK, drops a repeat
of the same random_id to the same peer), messages.sendMessageEventAnswer. The
long poll endpoint answers a_check with events after ``ts``, and can be told to
answer ``{"failed": 1|2|3}`` or to fail at the HTTP level.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class VKStandIn:
    token: str
    group_id: int
    events: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    send_calls: list[dict[str, Any]] = field(default_factory=list)
    event_answers: list[dict[str, Any]] = field(default_factory=list)
    photos: dict[str, bytes] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    """Long poll answers to give before any events, e.g. {"failed": 2}."""
    send_errors: list[int] = field(default_factory=list)
    """VK error codes for the next messages.send calls."""
    http_down_until: float = 0.0
    key: str = "key-1"
    keys_issued: int = 0
    _msg_ids: itertools.count = field(default_factory=lambda: itertools.count(9000))
    _new_event: asyncio.Event = field(default_factory=asyncio.Event)
    _random_ids: dict[tuple[int, int], int] = field(default_factory=dict)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base}/method"

    def add_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._new_event.set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/method/{name}", self.method)
        app.router.add_get("/lp", self.longpoll)
        app.router.add_get("/photo/{name}", self.photo)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @staticmethod
    def error(code: int, message: str) -> web.Response:
        return web.json_response({"error": {"error_code": code, "error_msg": message, "request_params": []}})

    async def method(self, request: web.Request) -> web.Response:
        if time.monotonic() < self.http_down_until:
            return web.Response(status=502, text="Bad Gateway")
        params = dict(await request.post())
        if params.get("access_token") != self.token:
            return self.error(5, "User authorization failed: invalid access_token")
        name = request.match_info["name"]
        if name == "groups.getLongPollServer":
            self.keys_issued += 1
            self.key = f"key-{self.keys_issued}"
            return web.json_response({"response": {"key": self.key, "server": f"{self.base}/lp", "ts": "1"}})
        if name == "messages.send":
            self.send_calls.append(params)
            if self.send_errors:
                code = self.send_errors.pop(0)
                return self.error(
                    code,
                    {10: "Internal server error", 901: "Can't send messages for users without permission"}.get(
                        code, "error"
                    ),
                )
            random_id = int(params.get("random_id") or 0)
            peer = int(params["peer_id"])
            if random_id and (peer, random_id) in self._random_ids:
                return web.json_response({"response": self._random_ids[(peer, random_id)]})
            message_id = next(self._msg_ids)
            if random_id:
                self._random_ids[(peer, random_id)] = message_id
            self.sent.append({**params, "peer_id": peer, "random_id": random_id})
            return web.json_response({"response": message_id})
        if name == "messages.sendMessageEventAnswer":
            self.event_answers.append(params)
            return web.json_response({"response": 1})
        return self.error(3, "Unknown method passed")

    async def longpoll(self, request: web.Request) -> web.Response:
        if self.failures:
            return web.json_response(self.failures.pop(0))
        if request.query.get("key") != self.key:
            return web.json_response({"failed": 2})
        ts = int(request.query.get("ts") or 1)
        wait = min(float(request.query.get("wait") or 0), 3.0)
        deadline = time.monotonic() + wait
        while len(self.events) < ts and time.monotonic() < deadline:
            self._new_event.clear()
            try:
                await asyncio.wait_for(self._new_event.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        batch = self.events[ts - 1 :]
        return web.json_response({"ts": str(ts + len(batch)), "updates": batch})

    async def photo(self, request: web.Request) -> web.Response:
        data = self.photos.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/jpeg")

    def sent_to(self, peer_id: int) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["peer_id"] == peer_id]


def message_new(group_id: int, peer_id: int, cmid: int, text: str, **extra: Any) -> dict[str, Any]:
    message = {
        "date": int(time.time()),
        "from_id": peer_id,
        "id": cmid + 5000,
        "out": 0,
        "attachments": [],
        "conversation_message_id": cmid,
        "fwd_messages": [],
        "important": False,
        "is_hidden": False,
        "peer_id": peer_id,
        "random_id": 0,
        "text": text,
    }
    message.update(extra)
    return {
        "group_id": group_id,
        "type": "message_new",
        "event_id": f"ev{peer_id}{cmid}",
        "v": "5.199",
        "object": {"message": message, "client_info": {"keyboard": True, "inline_keyboard": True}},
    }
