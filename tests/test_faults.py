"""Faults on the worst night: a router killed with -9, RabbitMQ restarted, the database gone for 20 seconds,
a poison message, and SIGTERM in the middle of work. Nothing lost, nothing doubled. Run alone: ``make fault``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adshub.bus import RabbitBus, Topology
from adshub.contract import Inbound, Sender
from adshub.metrics import METRICS
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase, free_port, port_open
from app.runtime import Hub
from journal.repository import Journal
from journal.users import Users
from tests.helpers import REPO, Dispatcher, cleanup_topology, make_settings, queues_idle, wait_for

pytestmark = pytest.mark.fault
NUMBER = re.compile(r"\d{4}-\d{6}")


def hub_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ADSHUB_MONGO_URL": settings.mongo_url,
        "ADSHUB_AMQP_URL": settings.amqp_url,
        "ADSHUB_BUS_PREFIX": settings.bus_prefix,
        "ADSHUB_HTTP_PORT": str(settings.http_port),
        "ADSHUB_EMBEDDED_DB": "false",
        "ADSHUB_LOG_FORMAT": "text",
        "ADSHUB_DATA_DIR": str(settings.data_dir),
        "ADSHUB_CHAT_RATE_PER_MINUTE": "100000",
        "ADSHUB_CHAT_IP_RATE_PER_MINUTE": "100000",
        "ADSHUB_CHAT_SOCKETS_PER_ADDRESS": "100000",
        "ADSHUB_ROUTER_SHARDS": str(settings.router_shards),
        "PYTHONUNBUFFERED": "1",
    }


def spawn(parts: list[str], settings: Settings, log: Path, wait_port: bool = False) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "run", *parts],
            env=hub_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"adshub run {parts} exited: {log.read_text()[-2000:]}")
        ready = port_open("127.0.0.1", settings.http_port) if wait_port else "adshub started" in log.read_text()
        if ready:
            return process
        if time.monotonic() > deadline:
            pytest.fail(f"adshub run {parts} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


class Resident:
    """One web chat session that sends one message and collects every frame it gets back."""

    def __init__(self, http: aiohttp.ClientSession, port: int, text: str) -> None:
        self.http = http
        self.port = port
        self.text = text
        self.session = f"fault{uuid.uuid4().hex[:16]}"
        self.frames: list[dict[str, Any]] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        self.ws = await self.http.ws_connect(f"http://127.0.0.1:{self.port}/chat/ws?session={self.session}")
        self.frames.append(await self.ws.receive_json(timeout=30))

    async def send_until_acked(self, give_up: float = 90.0) -> None:
        """Send like the widget does: again after a clear «unavailable» error, until the hub acks."""
        deadline = time.monotonic() + give_up
        while time.monotonic() < deadline:
            if self.ws is None or self.ws.closed:
                try:
                    await self.open()
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(1)
                    continue
            assert self.ws is not None
            await self.ws.send_json({"type": "message", "id": "m1", "text": self.text})
            while True:
                frame = await self.ws.receive_json(timeout=give_up)
                self.frames.append(frame)
                if frame.get("type") == "ack":
                    return
                if frame.get("type") == "error":
                    await asyncio.sleep(1)
                    break
        raise AssertionError(f"{self.session} was never acked")

    async def listen(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.frames.append(json.loads(msg.data))
        except (aiohttp.ClientError, asyncio.CancelledError):
            pass

    async def settle(self) -> None:
        """Every frame the hub sent before now has been read: a ping is answered after them."""
        assert self.ws is not None
        pongs = sum(1 for f in self.frames if f.get("type") == "pong")
        await self.ws.send_json({"type": "ping"})
        await wait_for(lambda: sum(1 for f in self.frames if f.get("type") == "pong") > pongs, timeout=30)

    @property
    def numbered(self) -> list[str]:
        return [f["request"]["number"] for f in self.frames if f.get("type") == "message" and f.get("request")]


async def settled(settings: Settings, residents: list[Resident]) -> None:
    """The hub finished everything it was given and every resident has read every frame sent to them."""
    await wait_for(lambda: asyncio.to_thread(queues_idle, settings.bus_prefix), timeout=60, what="every queue drained")
    await asyncio.gather(*(r.settle() for r in residents))


async def journal_counts(settings: Settings) -> tuple[int, int, int]:
    j = Journal.connect(settings.mongo_url, settings.database_name)
    try:
        requests = await j.requests.count_documents({})
        sources = len(await j.requests.distinct("source_message_id"))
        replies = await j.messages.count_documents({"direction": "out"})
        return requests, sources, replies
    finally:
        await j.close()


async def broken_references(settings: Settings) -> list[str]:
    """What a partial write could have left: requests naming a resident, conversation or incident that is
    not there, a registration without its audit entry, a message naming a request that is not there."""
    j = Journal.connect(settings.mongo_url, settings.database_name)
    try:
        contacts = set(await j.contacts.distinct("_id"))
        conversations = set(await j.conversations.distinct("_id"))
        audited = set(await j.audit.distinct("request", {"action": "registered"}))
        incidents = set(await j.incidents.distinct("_id"))
        numbers: set[str] = set()
        broken: list[str] = []
        async for r in j.requests.find({}, {"contact_id": 1, "conversation_id": 1, "incident_id": 1}):
            numbers.add(r["_id"])
            if r.get("contact_id") not in contacts:
                broken.append(f"{r['_id']}: contact {r.get('contact_id')} missing")
            if r.get("conversation_id") not in conversations:
                broken.append(f"{r['_id']}: conversation {r.get('conversation_id')} missing")
            if r.get("incident_id") and r["incident_id"] not in incidents:
                broken.append(f"{r['_id']}: incident {r['incident_id']} missing")
            if r["_id"] not in audited:
                broken.append(f"{r['_id']}: no registration audit entry")
        async for m in j.messages.find({"request_number": {"$ne": None}}, {"request_number": 1}):
            if m["request_number"] not in numbers:
                broken.append(f"message {m['_id']}: request {m['request_number']} missing")
        return broken
    finally:
        await j.close()


@pytest.fixture
def fault_settings(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path) -> Settings:
    return make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        chat_rate_per_minute=100000,
        chat_ip_rate_per_minute=100000,
        chat_sockets_per_address=100000,
    )


async def test_router_killed_with_minus_9_loses_and_doubles_nothing(fault_settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "hub.log"
    web = spawn(["webchat"], fault_settings, log, wait_port=True)
    router = spawn(["router"], fault_settings, log)
    residents: list[Resident] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            residents = [
                Resident(http, fault_settings.http_port, f"Прорвало трубу, хлещет вода! Ленина {n % 40 + 1} кв {n}")
                for n in range(300)
            ]
            await asyncio.gather(*(r.open() for r in residents))
            listeners = [asyncio.create_task(r.listen()) for r in residents]
            for r in residents:
                assert r.ws is not None
                await r.ws.send_json({"type": "message", "id": "m1", "text": r.text})
            await wait_for(lambda: sum(1 for r in residents if r.numbered) >= 40, timeout=60)
            router.send_signal(signal.SIGKILL)
            router.wait(10)
            answered_before = sum(1 for r in residents if r.numbered)
            assert answered_before < 300, "the router finished before it could be killed"
            router = spawn(["router"], fault_settings, log)
            await wait_for(lambda: all(r.numbered for r in residents), timeout=180)
            await settled(fault_settings, residents)
            for task in listeners:
                task.cancel()
        replies = Counter(len(r.numbered) for r in residents)
        assert replies == {1: 300}, replies
        assert len({r.numbered[0] for r in residents}) == 300
        requests, sources, out = await journal_counts(fault_settings)
        assert requests == sources == out == 300
        assert await broken_references(fault_settings) == []
    finally:
        for process in (router, web):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
        await cleanup_topology(fault_settings)


class Talker:
    """A resident who writes ten messages in a row without waiting, as people do at night."""

    def __init__(self, http: aiohttp.ClientSession, port: int, n: int) -> None:
        self.http = http
        self.port = port
        self.session = f"talk{n:03d}{uuid.uuid4().hex[:10]}"
        self.texts = [f"Прорвало трубу, хлещет вода! Гагарина {n % 30 + 1} кв {n + 1}"] + [
            f"Вода всё ещё течёт, уже по колено (сообщение {k})" for k in range(2, 11)
        ]
        self.frames: list[dict[str, Any]] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        self.ws = await self.http.ws_connect(f"http://127.0.0.1:{self.port}/chat/ws?session={self.session}")
        self.frames.append(await self.ws.receive_json(timeout=30))

    async def write(self) -> None:
        assert self.ws is not None
        for k, text in enumerate(self.texts, start=1):
            await self.ws.send_json({"type": "message", "id": f"m{k:02d}", "text": text})

    async def listen(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.frames.append(json.loads(msg.data))

    @property
    def replies(self) -> list[str]:
        """Ids of the replies received, in the order they came."""
        return [str(f["id"]) for f in self.frames if f.get("type") == "message" and f.get("from") == "hub"]


async def test_three_routers_keep_each_conversation_in_order_through_a_kill(
    fault_settings: Settings, tmp_path: Path
) -> None:
    """600 messages from 60 residents, three routers, one killed with -9 and restarted mid-run: every
    message answered once, each resident's first message registers and the rest follow it in order,
    the year's numbers unique and without gaps."""
    settings = fault_settings.model_copy(update={"router_shards": 6})
    log = tmp_path / "hub.log"
    web = spawn(["webchat"], settings, log, wait_port=True)
    routers = [spawn(["router"], settings, tmp_path / f"router{n}.log") for n in range(3)]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            talkers = [Talker(http, settings.http_port, n) for n in range(60)]
            await asyncio.gather(*(t.open() for t in talkers))
            listeners = [asyncio.create_task(t.listen()) for t in talkers]
            await asyncio.gather(*(t.write() for t in talkers))
            await wait_for(lambda: sum(len(t.replies) for t in talkers) >= 120, timeout=90)
            routers[0].send_signal(signal.SIGKILL)
            routers[0].wait(10)
            assert sum(len(t.replies) for t in talkers) < 600, "the routers finished before one could be killed"
            routers[0] = spawn(["router"], settings, tmp_path / "router0-again.log")
            await wait_for(lambda: all(len(t.replies) >= 10 for t in talkers), timeout=240, what="every reply")
            await wait_for(lambda: asyncio.to_thread(queues_idle, settings.bus_prefix), timeout=60)
            await asyncio.sleep(1.0)
            for task in listeners:
                task.cancel()
        for t in talkers:
            expected = [f"webchat:{t.session}:m{k:02d}#reply" for k in range(1, 11)]
            assert t.replies == expected, (t.session, t.replies)
        j = Journal.connect(settings.mongo_url, settings.database_name)
        try:
            requests = [
                r async for r in j.requests.find({}, {"seq": 1, "year": 1, "source_message_id": 1, "follow_ups": 1})
            ]
            assert sorted(r["source_message_id"] for r in requests) == sorted(
                f"webchat:{t.session}:m01" for t in talkers
            )
            assert all(r.get("follow_ups") == 9 for r in requests), [r.get("follow_ups") for r in requests]
            years = {r["year"] for r in requests}
            for year in years:
                seqs = sorted(r["seq"] for r in requests if r["year"] == year)
                assert seqs == list(range(1, len(seqs) + 1)), f"{year}: {seqs}"
            replies = await j.messages.count_documents({"direction": "out"})
            assert replies == 600
        finally:
            await j.close()
        assert await broken_references(settings) == []
    finally:
        for process in (*routers, web):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
        await cleanup_topology(settings)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def test_rabbitmq_restart_is_survived(fault_settings: Settings) -> None:
    hub = Hub(fault_settings, ["router", "webchat"])
    await hub.start()
    try:
        async with aiohttp.ClientSession() as http:
            before = [Resident(http, hub.port or 0, f"Пахнет газом в подъезде, Мира {n}") for n in range(10)]
            for r in before:
                await r.open()
                await r.send_until_acked()
            listeners = [asyncio.create_task(r.listen()) for r in before]
            await wait_for(lambda: all(r.numbered for r in before), timeout=30)

            restart = asyncio.create_task(asyncio.to_thread(_restart_rabbitmq))
            await asyncio.sleep(1)
            during = [Resident(http, hub.port or 0, f"Застряли в лифте, Садовая {n}, подъезд 1") for n in range(10)]
            await asyncio.gather(*(r.send_until_acked(give_up=150) for r in during))
            await restart
            listeners += [asyncio.create_task(r.listen()) for r in during]
            await wait_for(lambda: all(r.numbered for r in during), timeout=120)
            await settled(fault_settings, before + during)
            for task in listeners:
                task.cancel()
        assert all(len(r.numbered) == 1 for r in before + during)
        requests, sources, _ = await journal_counts(fault_settings)
        assert requests == sources == 20
        assert await broken_references(fault_settings) == []
    finally:
        await hub.stop()
        await cleanup_topology(fault_settings)


def _restart_rabbitmq() -> None:
    rabbitmqctl("stop_app")
    time.sleep(5)
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")


@pytest.fixture
def own_database() -> Iterator[EmbeddedDatabase]:
    storage = Path(tempfile.mkdtemp(prefix="adshub-outage-"))
    db = EmbeddedDatabase("127.0.0.1", free_port(), storage / "db", cache_size="128M")
    db.start()
    yield db
    db.stop()


async def test_database_gone_for_20_seconds_messages_wait_and_are_registered(
    own_database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path
) -> None:
    settings = make_settings(own_database, rabbitmq, unique, tmp_path, chat_sockets_per_address=1000)
    hub = Hub(settings, ["router", "webchat"])
    await hub.start()
    try:
        async with aiohttp.ClientSession() as http:
            first = Resident(http, hub.port or 0, "Нет света во всём доме, Лесная 10")
            await first.open()
            await first.send_until_acked()
            listeners = [asyncio.create_task(first.listen())]
            await wait_for(lambda: first.numbered, timeout=20)

            own_database.stop()
            retries_before = METRICS.transient_retries._value.get()
            dead_before = await _dead_queue_depth(settings)
            outage_started = time.monotonic()
            waiting = [Resident(http, hub.port or 0, f"Из щитка искры, Лесная {n}, кв 5") for n in range(20)]
            await asyncio.gather(*(r.send_until_acked() for r in waiting))
            assert time.monotonic() - outage_started < 15, "taking messages must not wait for the database"
            listeners += [asyncio.create_task(r.listen()) for r in waiting]
            await asyncio.sleep(max(0.0, 20 - (time.monotonic() - outage_started)))
            assert not any(r.numbered for r in waiting)
            retries = METRICS.transient_retries._value.get() - retries_before
            assert 0 < retries <= 20 * 12, f"{retries} retries in 20 s is a hot loop"
            assert await _dead_queue_depth(settings) == dead_before

            own_database.start()
            await wait_for(lambda: all(r.numbered for r in waiting), timeout=90)
            await settled(settings, [first, *waiting])
            for task in listeners:
                task.cancel()
        assert all(len(r.numbered) == 1 for r in waiting)
        requests, sources, _ = await journal_counts(settings)
        assert requests == sources == 21
        assert await broken_references(settings) == []
        j = Journal.connect(settings.mongo_url, settings.database_name)
        try:
            assert await j.dead_letters.count_documents({}) == 0
        finally:
            await j.close()
    finally:
        await hub.stop()
        await cleanup_topology(settings)


async def _dead_queue_depth(settings: Settings) -> int:
    bus = RabbitBus(settings.amqp_url, Topology(settings.bus_prefix))
    await bus.connect()
    try:
        return (await bus.queue_depths([bus.topology.dead_queue]))[bus.topology.dead_queue]
    finally:
        await bus.close()


async def test_poison_message_reaches_the_dead_letter_queue_and_the_dispatchers(fault_settings: Settings) -> None:
    hub = Hub(fault_settings, ["router", "webchat", "inbox"])
    await hub.start()
    try:
        assert hub.journal is not None
        await Users(hub.journal).add("anna", "dispatcher-pass", "dispatcher")
        bus = RabbitBus(fault_settings.amqp_url, Topology(fault_settings.bus_prefix))
        await bus.connect()
        try:
            poison = {
                "id": "webchat:s:1",
                "channel": "webchat",
                "address": "s",
                "sender": {"id": "s"},
                "received_at": "not a date",
                "text": ["not", "text"],
            }
            await bus._publish("inbound", "inbound.0", json.dumps(poison).encode(), "poison-42")
        finally:
            await bus.close()
        dead = await wait_for(lambda: hub.journal.dead_letters.find_one({"message_id": "poison-42"}))  # type: ignore[union-attr]
        assert "received_at" in dead["reason"] and "text" in dead["reason"]
        client = Dispatcher(f"http://127.0.0.1:{hub.port}")
        try:
            await client.login("anna", "dispatcher-pass")
            _, page = await client.get("/inbox/dead-letters")
            assert "poison-42" in page and "received_at" in page
        finally:
            await client.close()
    finally:
        await hub.stop()
        await cleanup_topology(fault_settings)


async def test_sigterm_drains_in_flight_work(fault_settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "router.log"
    router = spawn(["router"], fault_settings, log)
    bus = RabbitBus(fault_settings.amqp_url, Topology(fault_settings.bus_prefix))
    await bus.connect()
    try:
        await asyncio.gather(
            *(
                bus.publish_inbound(
                    Inbound(
                        id=f"webchat:term{n}:1",
                        channel="webchat",
                        address=f"term{n}",
                        sender=Sender(id=f"term{n}"),
                        text=f"Течёт батарея, Гоголя {n % 30 + 1} кв {n}",
                        received_at=datetime.now(UTC),
                    )
                )
                for n in range(200)
            )
        )
        await wait_for(lambda: "registered" in log.read_text() or _count_sync(fault_settings) > 0, timeout=60)
        router.send_signal(signal.SIGTERM)
        assert router.wait(60) == 0
        output = log.read_text()
        assert "stopping: draining in-flight work" in output and "stopped" in output
        assert "Traceback" not in output
        partial = await journal_counts(fault_settings)
        assert partial[0] == partial[1] == partial[2]
        router = spawn(["router"], fault_settings, tmp_path / "router2.log")
        await wait_for(lambda: _count_sync(fault_settings) == 200, timeout=120)
        await wait_for(
            lambda: asyncio.to_thread(queues_idle, fault_settings.bus_prefix), timeout=60, what="the router finished"
        )
        requests, sources, replies = await journal_counts(fault_settings)
        assert requests == sources == replies == 200
        assert await broken_references(fault_settings) == []
    finally:
        await bus.close()
        if router.poll() is None:
            router.send_signal(signal.SIGTERM)
            router.wait(60)
        await cleanup_topology(fault_settings)


def _count_sync(settings: Settings) -> int:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_url, serverSelectionTimeoutMS=3000)
    try:
        return client[settings.database_name].requests.count_documents({})
    finally:
        client.close()


def test_embedded_database_dies_with_a_killed_hub(tmp_path: Path) -> None:
    """A hub killed with -9 must not leave its database running, holding the port and the data lock."""
    script = (
        "import sys, time; from pathlib import Path; from app.embedded import EmbeddedDatabase, free_port\n"
        "db = EmbeddedDatabase('127.0.0.1', free_port(), Path(sys.argv[1]) / 'db', cache_size='64M')\n"
        "db.start(); print(db.process.pid, db.port, flush=True); time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid_text, port_text = parent.stdout.readline().split()
        db_pid, db_port = int(pid_text), int(port_text)
        assert port_open("127.0.0.1", db_port)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(db_pid):
            time.sleep(0.2)
        assert not _alive(db_pid), "the embedded database outlived the killed hub"
        assert not port_open("127.0.0.1", db_port)
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError, UnboundLocalError):
            os.kill(db_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
