"""Test fixtures: a real SecantusDB server started for the session, the real
RabbitMQ on 127.0.0.1:5672 with a unique topology prefix per test, and the hub
itself started in-process on a free port."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adshub.bus import RabbitBus, Topology
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase, free_port
from app.runtime import Hub
from bots.texts import Texts
from domain.deadlines import DeadlinePolicy
from journal.repository import Journal
from router.service import Router

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ADSHUB_SHARED_DIR", REPO.parent / "shared"))
AMQP_URL = os.environ.get("ADSHUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CHANNELS = ("webchat", "telegram", "vk", "email", "voicemail")


def shared_path(*parts: str) -> Path:
    """A file of ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (set ADSHUB_SHARED_DIR)")
    return path


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    if not _port_open("127.0.0.1", 5672):
        if shutil.which("rabbitmq-server"):
            subprocess.run(["rabbitmq-server", "-detached"], check=False)
            for _ in range(90):
                if _port_open("127.0.0.1", 5672):
                    break
                time.sleep(1)
        if not _port_open("127.0.0.1", 5672):
            pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 (make test starts it)")
    return AMQP_URL


@pytest.fixture(scope="session")
def database() -> Iterator[EmbeddedDatabase]:
    """One SecantusDB server for the session; each test uses its own database on it."""
    storage = Path(tempfile.mkdtemp(prefix="adshub-db-"))
    db = EmbeddedDatabase("127.0.0.1", free_port(), storage / "db", cache_size="256M")
    db.start()
    try:
        yield db
    finally:
        db.stop()
        shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path) -> Settings:
    return make_settings(database, rabbitmq, unique, tmp_path)


def make_settings(database: EmbeddedDatabase, amqp: str, unique: str, tmp_path: Path, **extra: Any) -> Settings:
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
    }
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def journal(settings: Settings) -> AsyncIterator[Journal]:
    j = Journal.connect(settings.mongo_url, settings.database_name)
    await j.prepare()
    yield j
    await j.client.drop_database(settings.database_name)
    await j.close()


@pytest.fixture
async def router(journal: Journal, bus: RabbitBus) -> Router:
    """The router alone, on the test's journal and bus, for feeding it messages directly."""
    return Router(journal, bus, Texts(DeadlinePolicy().tz, "УК «Тестовая»"), DeadlinePolicy())


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[RabbitBus]:
    b = RabbitBus(settings.amqp_url, Topology(settings.bus_prefix), prefetch=settings.prefetch, publish_timeout=20)
    await b.connect()
    yield b
    await b.delete_topology(CHANNELS)
    await b.close()


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    h = Hub(settings, ["router", "webchat"])
    await h.start()
    yield h
    await h.stop()
    await cleanup_topology(settings)


async def cleanup_topology(settings: Settings, database: bool = True) -> None:
    b = RabbitBus(settings.amqp_url, Topology(settings.bus_prefix))
    await b.connect()
    await b.delete_topology(CHANNELS)
    await b.close()
    if not database:
        return
    j = Journal.connect(settings.mongo_url, settings.database_name)
    await j.client.drop_database(settings.database_name)
    await j.close()


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

    async def frames_for(self, seconds: float) -> list[dict[str, Any]]:
        frames = []
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return frames
            try:
                frames.append(await self.receive(remaining))
            except TimeoutError:
                return frames


async def connect_chat(
    session_http: aiohttp.ClientSession, port: int, session: str, headers: dict[str, str] | None = None
) -> ChatClient:
    ws = await session_http.ws_connect(f"http://127.0.0.1:{port}/chat/ws?session={session}", headers=headers)
    client = ChatClient(ws)
    first = await client.receive()
    assert first["type"] == "history"
    client.history = first["messages"]
    return client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
