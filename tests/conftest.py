"""Test fixtures: a real SecantusDB server started for the session, the real RabbitMQ on 127.0.0.1:5672
with a unique topology prefix per test, and the hub itself started in-process on a free port.
Helpers that tests call live in ``tests.helpers``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from adshub.bus import RabbitBus, topology_of
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase, free_port
from app.runtime import Hub
from bots.texts import Texts
from channels import REGISTRY
from domain.deadlines import DeadlinePolicy
from journal.repository import Journal
from journal.users import Users
from router.service import Router
from tests.helpers import Dispatcher, cleanup_topology, make_settings, running_hub
from tests.mailservers import SmtpSink
from tests.standins.telegram_api import TelegramStandIn

AMQP_URL = os.environ.get("ADSHUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


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
async def standin(request: pytest.FixtureRequest) -> AsyncIterator[TelegramStandIn]:
    """The Telegram Bot API stand-in on loopback, for the bot token the test module names (``TOKEN``)."""
    api = TelegramStandIn(request.module.TOKEN)
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path) -> Settings:
    return make_settings(database, rabbitmq, unique, tmp_path)


@pytest.fixture
async def journal(settings: Settings) -> AsyncIterator[Journal]:
    j = Journal.connect(settings.mongo_url, settings.database_name)
    await j.prepare()
    yield j
    await j.drop()
    await j.close()


@pytest.fixture
async def router(journal: Journal, bus: RabbitBus) -> Router:
    """The router alone, on the test's journal and bus, for feeding it messages directly."""
    return Router(journal, bus, Texts(DeadlinePolicy().tz, "УК «Тестовая»"), DeadlinePolicy())


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[RabbitBus]:
    b = RabbitBus(settings.amqp_url, topology_of(settings), prefetch=settings.prefetch, publish_timeout=20)
    await b.connect()
    yield b
    await b.delete_topology(tuple(REGISTRY))
    await b.close()


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[Hub]:
    async with running_hub(settings, ["router", "webchat"]) as h:
        yield h


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# -- the dispatcher inbox ------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def inbox_settings(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, smtp: SmtpSink) -> Settings:
    return make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        smtp_url=smtp.url,
        email_from="ads@uk.example",
        municipality_email="adm@city.example",
        manager_alerts="email:boss@uk.example",
    )


@pytest.fixture
async def inbox_hub(inbox_settings: Settings) -> AsyncIterator[Hub]:
    hub = Hub(inbox_settings, ["router", "webchat", "inbox", "email"])
    await hub.start()
    assert hub.journal is not None
    users = Users(hub.journal)
    await users.add("anna", "dispatcher-pass", "dispatcher", "Анна Диспетчер")
    await users.add("boss", "manager-pass", "manager", "Руководитель")
    await hub.journal.staff.insert_one(
        {"_id": "s1", "name": "Пётр Сантехник", "trade": "сантехник", "email": "petr@uk.example", "active": True}
    )
    yield hub
    await hub.stop()
    await cleanup_topology(inbox_settings)


@pytest.fixture
async def anna(inbox_hub: Hub) -> AsyncIterator[Dispatcher]:
    client = Dispatcher(f"http://127.0.0.1:{inbox_hub.port}")
    status, _ = await client.login("anna", "dispatcher-pass")
    assert status == 200
    yield client
    await client.close()
