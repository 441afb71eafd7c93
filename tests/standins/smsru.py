"""A stand-in of SMS.ru's HTTP API on loopback, from sms.ru/api: ``sms/send`` and ``sms/status`` with
``json=1``.

It answers like the gateway: 200 for a wrong api_id, 202 for a number that is not one, 203 for no text,
220 when told the service is down; each accepted message gets an id ``000000-1000000N`` and status 100
(queued), which becomes 103 (delivered, with its cost per part) the first time its status is asked.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PART_PRICE = 3.5


def ucs2_parts(text: str) -> int:
    """The gateway's own count (independent of the hub's): 70 alone, 67 per part; ASCII 160/153."""
    ascii_only = all(ord(c) < 128 for c in text)
    single, multi = (160, 153) if ascii_only else (70, 67)
    units = sum(2 if ord(c) > 0xFFFF else 1 for c in text)
    return 1 if units <= single else -(-units // multi)


@dataclass
class SmsRuStandIn:
    api_id: str
    sent: list[dict[str, Any]] = field(default_factory=list)
    status_calls: int = 0
    down_for: int = 0
    """Answer the next this many sends with code 220 (service temporarily unavailable)."""
    runner: web.AppRunner | None = None
    port: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10000001))
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/sms/send", self.send)
        app.router.add_route("*", "/sms/status", self.status)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _values(self, request: web.Request) -> dict[str, str]:
        values = dict(request.query)
        if request.method == "POST":
            values.update({k: str(v) for k, v in (await request.post()).items()})
        return values

    async def send(self, request: web.Request) -> web.Response:
        values = await self._values(request)
        if values.get("api_id") != self.api_id:
            return web.json_response({"status": "ERROR", "status_code": 200, "status_text": "Неправильный api_id"})
        if self.down_for > 0:
            self.down_for -= 1
            return web.json_response(
                {"status": "ERROR", "status_code": 220, "status_text": "Сервис временно недоступен"}
            )
        text = values.get("msg", "")
        if not text:
            return web.json_response({"status": "ERROR", "status_code": 203, "status_text": "Нет текста сообщения"})
        answers: dict[str, Any] = {}
        for to in values.get("to", "").split(","):
            if not (to.isdigit() and 10 <= len(to) <= 15):
                answers[to] = {"status": "ERROR", "status_code": 202, "status_text": "Неправильно указан получатель"}
                continue
            sms_id = f"000000-{next(self._ids)}"
            self.sent.append(
                {
                    "id": sms_id,
                    "to": to,
                    "msg": text,
                    "from": values.get("from"),
                    "code": 100,
                    "parts": ucs2_parts(text),
                }
            )
            answers[to] = {"status": "OK", "status_code": 100, "sms_id": sms_id}
        self._changed.set()
        return web.json_response({"status": "OK", "status_code": 100, "sms": answers, "balance": 4122.56})

    async def status(self, request: web.Request) -> web.Response:
        values = await self._values(request)
        if values.get("api_id") != self.api_id:
            return web.json_response({"status": "ERROR", "status_code": 200, "status_text": "Неправильный api_id"})
        self.status_calls += 1
        by_id = {m["id"]: m for m in self.sent}
        answers: dict[str, Any] = {}
        for sms_id in values.get("sms_id", "").split(","):
            message = by_id.get(sms_id)
            if message is None:
                answers[sms_id] = {"status": "ERROR", "status_code": -1, "status_text": "Сообщение не найдено"}
                continue
            message["code"] = 103
            answers[sms_id] = {
                "status": "OK",
                "status_code": 103,
                "cost": round(PART_PRICE * message["parts"], 2),
                "status_text": "Сообщение доставлено",
            }
        return web.json_response({"status": "OK", "status_code": 100, "sms": answers})
