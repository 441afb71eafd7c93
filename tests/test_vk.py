"""The VK community bot against a VK API stand-in on loopback, with the rest of the pipeline real."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adshub.contract import Outbound
from adshub.errors import InvalidInput
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from channels.vk import parse_event
from journal.repository import Journal
from tests.helpers import Duplicates, cleanup_topology, make_settings, shared_path, wait_for
from tests.standins.vk_api_server import VKStandIn, message_new

TOKEN = "vk1.a.test-token"
GROUP = 200000001


def sample(name: str) -> dict[str, Any]:
    return json.loads(shared_path("samples", "vk", name).read_text(encoding="utf-8"))


def test_samples_parse() -> None:
    text = parse_event(sample("06_message_new_text_private.constructed.json"), GROUP)
    assert text is not None and text.id == "vk:100000001:87" and text.address == "100000001"
    assert "нет отопления" in text.text
    geo = parse_event(sample("08_message_new_geo.constructed.json"), GROUP)
    assert geo is not None and geo.location is not None and geo.location.title == "Москва, Россия"
    button = parse_event(sample("09_message_event_callback_button.constructed.json"), GROUP)
    assert button is not None and button.kind == "callback" and json.loads(button.payload["data"])["apt"] == 45
    assert parse_event(sample("05_group_join_ignore.official.json"), GROUP) is None
    assert parse_event(sample("10_callback_confirmation.constructed.json"), GROUP) is None


def test_group_chat_needs_a_mention_and_the_photo_is_the_largest() -> None:
    raw = sample("07_message_new_photo_in_group_chat.constructed.json")
    assert parse_event(raw, GROUP) is None
    raw["object"]["message"]["text"] = f"[club{GROUP}|АДС] Вот фото протечки на лестнице"
    event = parse_event(raw, GROUP)
    assert event is not None and event.text == "Вот фото протечки на лестнице"
    assert event.attachments[0].location == "https://sun9-1.userapi.com/example/z.jpg"


def test_malformed_events_are_refused() -> None:
    for bad in ({}, {"type": "message_new"}, {"type": "message_new", "object": {"message": {"peer_id": "x"}}}):
        with pytest.raises(InvalidInput):
            parse_event(bad, GROUP)


def test_random_id_is_deterministic_and_nonzero() -> None:
    a = Outbound(id="vk:5:1#reply", channel="vk", address="5", text="a")
    assert a.numeric_id == Outbound(id="vk:5:1#reply", channel="vk", address="5", text="b").numeric_id
    assert a.numeric_id != 0


@pytest.fixture
async def vk() -> AsyncIterator[VKStandIn]:
    api = VKStandIn(TOKEN, GROUP)
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def vk_settings(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, vk: VKStandIn
) -> Settings:
    return make_settings(
        database, rabbitmq, unique, tmp_path, vk_token=TOKEN, vk_group_id=GROUP, vk_api_base=vk.api_base, vk_wait=1
    )


@pytest.fixture
async def vk_hub(vk_settings: Settings) -> AsyncIterator[Hub]:
    hub = Hub(vk_settings, ["router", "vk"])
    await hub.start()
    yield hub
    await hub.stop()
    await cleanup_topology(vk_settings)


async def test_message_is_answered_once_with_a_deterministic_random_id(
    vk_hub: Hub, vk: VKStandIn, vk_settings: Settings
) -> None:
    event = message_new(GROUP, 100000001, 87, "Прорвало батарею, кипяток по полу! ул. Строителей 8 кв 104")
    vk.add_event(event)
    sent = await wait_for(lambda: vk.sent_to(100000001))
    assert "зарегистрирована" in sent[0]["message"] and sent[0]["random_id"] != 0
    assert json.loads(sent[0]["keyboard"])["buttons"][0][0]["action"]["type"] == "callback"

    duplicates = Duplicates()
    vk.add_event(json.loads(json.dumps(event)))
    await duplicates.settled()
    assert len(vk.sent_to(100000001)) == 1
    j = Journal.connect(vk_settings.mongo_url, vk_settings.database_name)
    try:
        assert await j.requests.count_documents({}) == 1
        assert (await j.requests.find_one({}))["category"] == "heating_accident"
    finally:
        await j.close()


async def test_long_poll_failures_are_handled_and_the_loop_never_blocks(
    vk_hub: Hub, vk: VKStandIn, vk_settings: Settings
) -> None:
    vk.failures = [{"failed": 1, "ts": 1}, {"failed": 2}, {"failed": 3}]
    loop_alive = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, loop_alive.set)
    await asyncio.wait_for(loop_alive.wait(), 1.0)
    vk.add_event(message_new(GROUP, 100000002, 3, "пахнет газом в подъезде, Кирова 6"))
    sent = await wait_for(lambda: vk.sent_to(100000002))
    assert "Запах газа" in sent[0]["message"]
    assert vk.keys_issued >= 3
    assert threading.active_count() < 40


async def test_retried_send_does_not_duplicate(vk_hub: Hub, vk: VKStandIn) -> None:
    vk.send_errors = [10, 10]
    vk.add_event(message_new(GROUP, 100000003, 5, "в лифте застрял ребенок, Мира 15, подъезд 2"))
    sent = await wait_for(lambda: vk.sent_to(100000003), timeout=20)
    assert len(sent) == 1
    calls = [c for c in vk.send_calls if int(c["peer_id"]) == 100000003]
    assert len(calls) == 3 and len({c["random_id"] for c in calls}) == 1


async def test_callback_button_is_answered_and_photos_are_kept(
    vk_hub: Hub, vk: VKStandIn, vk_settings: Settings
) -> None:
    vk.photos["leak.jpg"] = b"\xff\xd8\xff" + b"x" * 300
    photo = {
        "type": "photo",
        "photo": {
            "id": 1,
            "owner_id": 100000004,
            "sizes": [
                {"type": "s", "width": 75, "height": 56, "url": f"{vk.base}/photo/small.jpg"},
                {"type": "z", "width": 1280, "height": 960, "url": f"{vk.base}/photo/leak.jpg"},
            ],
        },
    }
    vk.add_event(
        message_new(GROUP, 100000004, 7, "Течёт с потолка, соседи сверху заливают, Мира 3 кв 5", attachments=[photo])
    )
    sent = await wait_for(lambda: vk.sent_to(100000004))
    number = sent[0]["message"].split("№ ")[1].split()[0]
    vk.add_event(
        {
            "type": "message_event",
            "group_id": GROUP,
            "event_id": "x",
            "v": "5.199",
            "object": {
                "user_id": 100000004,
                "peer_id": 100000004,
                "event_id": "evt-1",
                "payload": {"data": f"status:{number}"},
                "conversation_message_id": 8,
            },
        }
    )
    status = await wait_for(lambda: [m for m in vk.sent_to(100000004) if "Статус" in m["message"]])
    assert number in status[0]["message"]
    assert vk.event_answers and vk.event_answers[0]["event_id"] == "evt-1"
    j = Journal.connect(vk_settings.mongo_url, vk_settings.database_name)
    try:
        doc = await j.messages.find_one({"_id": "vk:100000004:7"})
        stored = await j.read_file(doc["attachments"][0]["location"])
        assert stored is not None and stored[0] == vk.photos["leak.jpg"]
    finally:
        await j.close()
