"""What many tests need besides fixtures: settings for a test hub, a started hub, waiting for a condition,
the hub's own signals that it suppressed a duplicate, a resident's chat client and a dispatcher's browser-like
client. Tests import these from here, never from each other."""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adshub.bus import RabbitBus, topology_of
from adshub.metrics import REGISTRY as METRICS_REGISTRY
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase, free_port
from app.runtime import Hub
from channels import REGISTRY
from journal.repository import Journal

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ADSHUB_SHARED_DIR", REPO.parent / "shared"))
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def shared_path(*parts: str) -> Path:
    """A file of ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (set ADSHUB_SHARED_DIR)")
    return path


def make_settings(database: EmbeddedDatabase, amqp: str, unique: str, tmp_path: Path, **extra: Any) -> Settings:
    """A hub of its own: its database on the session's server, its topology prefix on the real broker."""
    values: dict[str, Any] = {
        "mongo_url": f"{database.url}adshub_{unique}",
        "amqp_url": amqp,
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "bus_prefix": f"adshub-test-{unique}",
        "data_dir": tmp_path / "var",
        "embedded_db": False,
        "company_name": "УК «Тестовая»",
        "log_format": "text",
        "telegram_token": "",
        "vk_token": "",
        "imap_url": "",
        "smtp_url": "",
        "voicemail_spool": None,
        "mango_api_key": "",
        "sms_ru_api_id": "",
    }
    values.update(extra)
    return Settings(_env_file=None, **values)


async def cleanup_topology(settings: Settings, database: bool = True) -> None:
    """Delete the test's queues and exchanges (every registered channel's) and its database."""
    b = RabbitBus(settings.amqp_url, topology_of(settings))
    await b.connect()
    await b.delete_topology(tuple(REGISTRY))
    await b.close()
    if not database:
        return
    j = Journal.connect(settings.mongo_url, settings.database_name)
    await j.drop()
    await j.close()


@contextlib.asynccontextmanager
async def running_hub(settings: Settings, parts: Sequence[str]) -> AsyncIterator[Hub]:
    """A hub started in this process, stopped and cleaned up afterwards."""
    hub = Hub(settings, parts)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
        await cleanup_topology(settings)


@contextlib.asynccontextmanager
async def journal_of(settings: Settings) -> AsyncIterator[Journal]:
    """A client of a hub's journal, for looking at what it wrote."""
    j = Journal.connect(settings.mongo_url, settings.database_name)
    try:
        yield j
    finally:
        await j.close()


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met in {timeout:.0f}s")


def queues_idle(prefix: str) -> bool:
    """Every queue of a topology prefix is empty with nothing unacknowledged: the hub has finished what
    it was given (what a consumer sends is sent before it acks)."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "messages_ready", "messages_unacknowledged", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in listed.splitlines() if line.startswith(f"{prefix}.")]
    return all(len(row) == 3 and row[1] == "0" and row[2] == "0" for row in rows)


def metric(name: str, **labels: str) -> float:
    return METRICS_REGISTRY.get_sample_value(name, labels) or 0.0


class Duplicates:
    """The hub's own account of the duplicates it suppressed since this object was made.

    Instead of sleeping and then asserting that nothing more came, a test waits until the hub says it
    has seen the duplicate (the router) and has dropped every reply it sent again for it (the delivery)."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        return (
            metric("adshub_duplicates_suppressed_total", stage="router"),
            metric("adshub_duplicates_suppressed_total", stage="delivery"),
            metric("adshub_replies_resent_total"),
        )

    def since(self) -> tuple[float, float, float]:
        now = self._read()
        return now[0] - self.start[0], now[1] - self.start[1], now[2] - self.start[2]

    async def settled(self, count: int = 1, timeout: float = 20.0) -> None:
        """``count`` inbound duplicates were seen, and every reply resent for them was dropped again."""
        await wait_for(lambda: self.since()[0] >= count, timeout, f"{count} duplicate(s) seen by the router")
        await wait_for(lambda: self.since()[1] >= self.since()[2], timeout, "resent replies dropped by delivery")


class ChatClient:
    """A resident's web chat widget, speaking the WebSocket protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.history: list[dict[str, Any]] = []

    async def send(self, client_id: str, text: str) -> None:
        await self.ws.send_json({"type": "message", "id": client_id, "text": text})

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        frame = await self.ws.receive_json(timeout=timeout)
        assert isinstance(frame, dict)
        return frame

    async def receive_type(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            frame = await self.receive(max(0.05, remaining))
            if frame.get("type") == kind:
                return frame

    async def frames_until(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Every frame until ``done(frames)`` holds."""
        frames: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not done(frames):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"frames never satisfied the condition: {frames}")
            frames.append(await self.receive(remaining))
        return frames

    async def drain(self) -> list[dict[str, Any]]:
        """The frames already on their way: a ping is answered after them."""
        await self.ws.send_json({"type": "ping"})
        frames = await self.frames_until(lambda fs: bool(fs) and fs[-1].get("type") == "pong")
        return frames[:-1]


async def connect_chat(
    session_http: aiohttp.ClientSession, port: int, session: str, headers: dict[str, str] | None = None
) -> ChatClient:
    ws = await session_http.ws_connect(f"http://127.0.0.1:{port}/chat/ws?session={session}", headers=headers)
    client = ChatClient(ws)
    first = await client.receive()
    assert first["type"] == "history"
    client.history = first["messages"]
    return client


class Dispatcher:
    """A browser-like HTTP client of the inbox with its own cookie jar."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, **kw: Any) -> tuple[int, str]:
        headers = {"Accept": "text/html", **kw.pop("headers", {})}
        async with self.http.get(self.base + path, headers=headers, allow_redirects=kw.pop("follow", True), **kw) as r:
            text = await r.text()
            found = CSRF.search(text)
            if found and "/inbox/login" not in text:
                self.csrf = found.group(1)
            return r.status, text

    async def login(self, login: str, password: str) -> tuple[int, str]:
        _, page = await self.get("/inbox/")
        token = CSRF.search(page)
        assert token
        async with self.http.post(
            self.base + "/inbox/login", data={"csrf": token.group(1), "login": login, "password": password}
        ) as r:
            text = await r.text()
            status = r.status
        if status == 200:
            await self.get("/inbox/")
        return status, text

    async def post(self, path: str, data: dict[str, Any] | aiohttp.FormData, csrf: bool = True) -> tuple[int, str]:
        if csrf and isinstance(data, dict):
            data = {"csrf": self.csrf, **data}
        async with self.http.post(self.base + path, data=data, headers={"Accept": "text/html"}) as r:
            return r.status, await r.text()


def visible_text(page: str) -> str:
    """What a person reads on a page: the text outside tags and scripts."""
    without_scripts = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", without_scripts))


async def register_from_chat(hub: Hub, session: str, text: str) -> tuple[Any, str]:
    http = aiohttp.ClientSession()
    chat = await connect_chat(http, hub.port or 0, session)
    await chat.send("m1", text)
    reply = await chat.receive_type("message")
    chat.http = http  # type: ignore[attr-defined]
    return chat, reply["request"]["number"]
