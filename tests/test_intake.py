"""The whole intake path with real parts: web chat → RabbitMQ → router → journal → reply."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import openpyxl
import pytest

from adshub.bus import RabbitBus, Topology
from adshub.contract import Inbound, Sender
from adshub.settings import Settings
from app.embedded import free_port, port_open
from app.runtime import Hub
from channels.webchat import WebChatSettings
from journal.repository import Journal
from tests.helpers import REPO, Duplicates, cleanup_topology, connect_chat

NUMBER = re.compile(r"\d{4}-\d{6}")


async def run_cli(settings: Settings, *args: str) -> str:
    """Run the real ``adshub`` command against the test's database and return its stdout."""
    return (await run_cli_bytes(settings, *args)).decode("utf-8")


async def run_cli_bytes(settings: Settings, *args: str) -> bytes:
    env = {**os.environ, "ADSHUB_MONGO_URL": settings.mongo_url, "ADSHUB_LOG_FORMAT": "text"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        *args,
        env=env,
        cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out


async def requests_of(settings: Settings) -> list[dict]:
    j = Journal.connect(settings.mongo_url, settings.database_name)
    try:
        return [doc async for doc in j.requests.find({})]
    finally:
        await j.close()


async def test_burst_pipe_is_registered_and_answered_with_number_and_deadline(
    hub: Hub, http: aiohttp.ClientSession, settings: Settings, tmp_path: Path
) -> None:
    chat = await connect_chat(http, hub.port or 0, "resident-0001")
    await chat.send("c1", "В подвале прорвало трубу горячей воды")
    assert (await chat.receive())["type"] == "ack"
    reply = await chat.receive_type("message")
    number = reply["request"]["number"]
    assert NUMBER.fullmatch(number)
    assert number in reply["text"] and "зарегистрирована" in reply["text"]
    assert "Авария на системе ГВС" in reply["text"] and "локализует" in reply["text"]
    deadline = datetime.fromisoformat(reply["request"]["deadline"])
    assert deadline.tzinfo is not None and deadline > datetime.now(UTC)

    exported = json.loads(await run_cli(settings, "journal", "export", "--format", "json"))
    assert [row["number"] for row in exported] == [number]
    assert exported[0]["category"] == "water_accident" and exported[0]["emergency"] is True
    assert exported[0]["channel"] == "webchat"

    today = datetime.now(settings.zone).date()
    later = (today + timedelta(days=1)).isoformat()
    assert json.loads(await run_cli(settings, "journal", "export", "--since", later)) == []
    rows = list(csv.reader(io.StringIO(await run_cli(settings, "journal", "export", "--format", "csv")), delimiter=";"))
    assert len(rows) == 2 and rows[1][0] == number and "Номер" in rows[0][0]
    target = tmp_path / "journal.xlsx"
    until = today.isoformat()
    await run_cli(settings, "journal", "export", "--format", "xlsx", "--until", until, "--output", str(target))
    piped = await run_cli_bytes(settings, "journal", "export", "--format", "xlsx")
    for book in (openpyxl.load_workbook(target), openpyxl.load_workbook(io.BytesIO(piped))):
        sheet = book.active
        assert sheet is not None and [c.value for c in sheet["A"]][1:] == [number]


async def test_same_client_message_twice_makes_one_request_and_one_reply(
    hub: Hub, http: aiohttp.ClientSession, settings: Settings
) -> None:
    chat = await connect_chat(http, hub.port or 0, "resident-0002")
    duplicates = Duplicates()
    await chat.send("same-id", "Прорвало батарею в спальне, кипяток по полу, ул. Строителей 8 кв 104")
    await chat.send("same-id", "Прорвало батарею в спальне, кипяток по полу, ул. Строителей 8 кв 104")
    frames = await chat.frames_until(
        lambda fs: [f["type"] for f in fs].count("ack") == 2 and any(f["type"] == "message" for f in fs)
    )
    await duplicates.settled()
    frames += await chat.drain()
    assert [f["type"] for f in frames].count("ack") == 2
    assert [f["type"] for f in frames].count("message") == 1
    docs = await requests_of(settings)
    assert len(docs) == 1 and docs[0]["category"] == "heating_accident"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("this is not json", "bad_json"),
        (json.dumps({"type": "message", "id": "e1", "text": "   "}), "empty_text"),
        (json.dumps({"type": "message", "id": "e2", "text": "а" * 100_000}), "too_large"),
        (json.dumps({"type": "message", "id": "e3", "text": "а" * 20_001}), "too_long"),
        (json.dumps({"type": "teleport", "id": "e4"}), "unknown_type"),
        (json.dumps({"type": "message", "text": "нет id"}), "bad_id"),
        (json.dumps(["type", "message"]), "bad_frame"),
    ],
)
async def test_bad_frames_get_a_clear_error_and_the_socket_stays_usable(
    hub: Hub, http: aiohttp.ClientSession, settings: Settings, raw: str, code: str
) -> None:
    chat = await connect_chat(http, hub.port or 0, "resident-0003")
    await chat.ws.send_str(raw)
    error = await chat.receive()
    assert error["type"] == "error" and error["code"] == code and error["message"]
    await chat.ws.send_json({"type": "ping"})
    assert (await chat.receive())["type"] == "pong"
    assert await requests_of(settings) == []


async def test_follow_up_is_attached_not_registered_again(
    hub: Hub, http: aiohttp.ClientSession, settings: Settings
) -> None:
    chat = await connect_chat(http, hub.port or 0, "resident-0004")
    await chat.send("a", "Соседи сверху заливают, с потолка льёт! Гагарина 5, кв 18")
    first = await chat.receive_type("message")
    await chat.send("b", "Вода уже на полу в коридоре")
    second = await chat.receive_type("message")
    number = first["request"]["number"]
    assert "request" not in second and number in second["text"]
    docs = await requests_of(settings)
    assert len(docs) == 1 and docs[0]["follow_ups"] == 1


async def test_routine_request_waits_for_the_address_then_registers(
    hub: Hub, http: aiohttp.ClientSession, settings: Settings
) -> None:
    chat = await connect_chat(http, hub.port or 0, "resident-0005")
    await chat.send("a", "Лифт не работает уже второй день")
    question = await chat.receive_type("message")
    assert "request" not in question and "адрес" in question["text"]
    assert await requests_of(settings) == []
    await chat.send("b", "ул. Мира 15, подъезд 2")
    reply = await chat.receive_type("message")
    assert reply["request"]["number"]
    docs = await requests_of(settings)
    assert len(docs) == 1
    assert docs[0]["category"] == "elevator_fault" and docs[0]["address"]["street"] == "Мира"
    assert "Лифт не работает" in docs[0]["text"]


async def test_reconnect_shows_history_with_replies_produced_while_away(
    hub: Hub, http: aiohttp.ClientSession, settings: Settings
) -> None:
    bus = RabbitBus(settings.amqp_url, Topology(settings.bus_prefix))
    await bus.connect()
    try:
        await bus.publish_inbound(
            Inbound(
                id="webchat:resident-0006:offline-1",
                channel="webchat",
                address="resident-0006",
                sender=Sender(id="resident-0006"),
                text="Пахнет газом в подъезде, Кирова 6",
                received_at=datetime.now(UTC),
            )
        )
    finally:
        await bus.close()
    for _ in range(50):
        if await requests_of(settings):
            break
        await asyncio.sleep(0.1)
    chat = await connect_chat(http, hub.port or 0, "resident-0006")
    kinds = [(m["from"], m.get("request", {}).get("number")) for m in chat.history]
    assert kinds[0] == ("resident", None)
    assert kinds[1][0] == "hub" and NUMBER.fullmatch(kinds[1][1] or "")
    assert "104" in chat.history[1]["text"]


async def test_redelivered_inbound_makes_one_request_and_one_reply(
    hub: Hub, http: aiohttp.ClientSession, settings: Settings
) -> None:
    chat = await connect_chat(http, hub.port or 0, "resident-0007")
    message = Inbound(
        id="webchat:resident-0007:r1",
        channel="webchat",
        address="resident-0007",
        sender=Sender(id="resident-0007"),
        text="Застряли в лифте, подъезд 2, Мира 15",
        received_at=datetime.now(UTC),
    )
    duplicates = Duplicates()
    bus = RabbitBus(settings.amqp_url, Topology(settings.bus_prefix))
    await bus.connect()
    try:
        for _ in range(3):
            await bus.publish_inbound(message)
    finally:
        await bus.close()
    frames = await chat.frames_until(lambda fs: any(f["type"] == "message" for f in fs))
    await duplicates.settled(count=2)
    frames += await chat.drain()
    assert len([f for f in frames if f["type"] == "message"]) == 1
    docs = await requests_of(settings)
    assert len(docs) == 1 and docs[0]["category"] == "elevator_trapped"


async def test_poison_message_is_dead_lettered_with_its_reason(hub: Hub, settings: Settings) -> None:
    bus = RabbitBus(settings.amqp_url, Topology(settings.bus_prefix))
    await bus.connect()
    try:
        await bus._publish("inbound", "inbound.0", json.dumps({"id": "webchat:x:1", "text": 5}).encode(), "poison-1")
    finally:
        await bus.close()
    j = Journal.connect(settings.mongo_url, settings.database_name)
    try:
        for _ in range(100):
            dead = await j.dead_letters.find_one({"message_id": "poison-1"})
            if dead:
                break
            await asyncio.sleep(0.1)
    finally:
        await j.close()
    assert dead is not None
    assert dead["reason"].startswith("invalid inbound message") and "channel" in dead["reason"]
    assert await requests_of(settings) == []


async def test_chat_socket_refuses_a_foreign_origin(hub: Hub, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(
            f"http://127.0.0.1:{hub.port}/chat/ws?session=resident-0008", headers={"Origin": "https://evil.example"}
        )
    assert info.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as bad:
        await http.ws_connect(f"http://127.0.0.1:{hub.port}/chat/ws?session=x")
    assert bad.value.status == 400


async def test_chat_is_rate_limited_per_session(hub: Hub, http: aiohttp.ClientSession, settings: Settings) -> None:
    chat = await connect_chat(http, hub.port or 0, "resident-0009")
    sent = settings.channel(WebChatSettings).chat_rate_per_minute + 3
    for n in range(sent):
        await chat.send(f"m{n}", "тест")
    frames = await chat.frames_until(lambda fs: len([f for f in fs if f["type"] in ("ack", "error")]) == sent)
    limited = [f for f in frames if f.get("code") == "rate_limited"]
    assert len(limited) >= 3


async def test_chat_page_widget_and_metrics(hub: Hub, http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{hub.port}"
    async with http.get(f"{base}/chat") as page:
        assert page.status == 200
        body = await page.text()
        assert '<script src="/chat/widget.js"' in body
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    async with http.get(f"{base}/chat/widget.js") as js:
        assert js.status == 200 and js.content_type == "application/javascript"
        assert "WebSocket" in await js.text()
    async with http.get(f"{base}/metrics") as metrics:
        text = await metrics.text()
        assert "adshub_registration_latency_seconds" in text and "adshub_messages_in_total" in text


async def test_hub_on_embedded_defaults_starts_its_own_database(
    database: object, rabbitmq: str, unique: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """What ``make run`` does: no database at the configured loopback address, so the hub starts one,
    talks to it without retryable writes (a single node has no failover), and stops it on the way out."""
    port = free_port()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        mongo_url=f"mongodb://127.0.0.1:{port}/adshub",
        amqp_url=rabbitmq,
        http_port=free_port(),
        bus_prefix=f"adshub-test-{unique}",
        data_dir=tmp_path / "var",
        embedded_db=True,
    )
    hub = Hub(settings, ["router", "webchat"])
    await hub.start()
    try:
        assert hub.embedded is not None and hub.embedded.port == port
        assert hub.journal is not None and hub.journal.client.options.retry_writes is False
        chat = await connect_chat(http, hub.port or 0, "resident-embedded")
        await chat.send("e1", "Течёт батарея в комнате, ул. Ленина 5 кв 3")
        reply = await chat.receive_type("message")
        assert NUMBER.fullmatch(reply["request"]["number"])
        assert (tmp_path / "var" / "db").is_dir()
    finally:
        await hub.stop()
        await cleanup_topology(settings, database=False)
    assert not port_open("127.0.0.1", port)
