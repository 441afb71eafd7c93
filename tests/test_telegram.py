"""The Telegram bot against a Bot API stand-in on loopback, with the rest of the pipeline real."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from channels.telegram import parse_update
from tests.helpers import Duplicates, cleanup_topology, journal_of, make_settings, shared_path, wait_for
from tests.standins.telegram_api import TelegramStandIn, message_update

TOKEN = "123456:TEST-token-for-the-stand-in"


def sample(name: str) -> dict[str, Any]:
    return json.loads(shared_path("samples", "telegram", name).read_text(encoding="utf-8"))


# -- parsing the real payloads ---------------------------------------------------


def test_official_examples_parse_leniently() -> None:
    start = parse_update(sample("01_message_text_start_command.official.json"))
    assert start is not None and start.kind == "command" and start.payload["command"] == "start"
    assert start.id == "telegram:1111111:1365" and start.address == "1111111"
    edited = parse_update(sample("02_edited_message.official.json"))
    assert edited is not None and edited.kind == "edit" and edited.edit_of == "telegram:1111111:1365"
    assert edited.text == "Edited text"
    voice = parse_update(sample("03_message_voice.official.json"))
    assert voice is not None and voice.attachments[0].kind == "voice" and voice.attachments[0].meta["duration"] == 5
    document = parse_update(sample("04_message_document.official.json"))
    assert document is not None and document.attachments[0].name == "Testfile.pdf"
    callback = parse_update(sample("05_callback_query_inline.official.json"))
    assert callback is not None and callback.kind == "callback" and callback.address == "1111111"


def test_constructed_examples() -> None:
    photo = parse_update(sample("07_message_photo_caption.constructed.json"))
    assert photo is not None and photo.text.startswith("Течёт с потолка")
    assert photo.attachments[0].location == "telegram-file:AgACAgIAAxkBAAIBnGExamplePhotoLarge"
    location = parse_update(sample("08_message_location.constructed.json"))
    assert location is not None and location.location is not None and location.location.latitude == 55.751244
    contact = parse_update(sample("09_message_contact_shared.constructed.json"))
    assert contact is not None and contact.sender.phone == "79161234567" and contact.payload["shared_contact"]
    group = sample("10_supergroup_message_bot_command.constructed.json")
    mine = parse_update(group, username="ExampleDispatchBot")
    assert mine is not None and mine.payload == {"command": "start", "args": "нет горячей воды с утра"}
    assert parse_update(group, username="SomeOtherBot") is None
    button = parse_update(sample("11_callback_query_with_message.constructed.json"))
    assert button is not None and button.payload["data"] == "addr:confirm:45" and button.address == "123456789"


def test_group_chatter_not_addressed_to_the_bot_is_ignored() -> None:
    update = message_update(1, -100500, 7, "соседи, у кого тоже нет воды?")
    update["message"]["chat"] = {"id": -100500, "type": "supergroup", "title": "Дом"}
    assert parse_update(update, username="TestDispatchBot") is None
    update["message"]["text"] = "@TestDispatchBot нет воды во всём доме"
    addressed = parse_update(update, username="TestDispatchBot")
    assert addressed is not None and addressed.text == "нет воды во всём доме"


def test_malformed_updates_are_refused() -> None:
    from adshub.errors import InvalidInput

    for bad in ({}, {"update_id": "x"}, {"update_id": 1, "message": {"chat": {}}}, [1, 2]):
        with pytest.raises(InvalidInput):
            parse_update(bad)


# -- the bot end to end ------------------------------------------------------------


@pytest.fixture
async def tg_settings(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, standin: TelegramStandIn
) -> Settings:
    return make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        telegram_token=TOKEN,
        telegram_api_base=standin.base,
        telegram_poll_timeout=1,
    )


@pytest.fixture
async def tg_hub(tg_settings: Settings) -> AsyncIterator[Hub]:
    hub = Hub(tg_settings, ["router", "telegram"])
    await hub.start()
    yield hub
    await hub.stop()
    await cleanup_topology(tg_settings)


async def test_message_is_answered_in_the_right_chat_and_redelivery_is_not_doubled(
    tg_hub: Hub, standin: TelegramStandIn, tg_settings: Settings
) -> None:
    standin.add_update(message_update(10, 777001, 55, "в лифте застрял ребенок, Мира 15 подъезд 2"))
    standin.add_update(message_update(11, 777002, 56, "дом 3, запах газа в подъезде"))
    replies = await wait_for(lambda: standin.sent_to("777001"))
    assert "зарегистрирована" in replies[0]["text"]
    await wait_for(lambda: standin.sent_to("777002"))
    assert "Застревание людей в лифте" in replies[0]["text"]

    duplicates = Duplicates()
    standin.add_update(message_update(12, 777001, 55, "в лифте застрял ребенок, Мира 15 подъезд 2"))
    await wait_for(lambda: standin.confirmed_offset >= 13)
    await duplicates.settled()
    assert len(standin.sent_to("777001")) == 1
    async with journal_of(tg_settings) as j:
        docs = [d async for d in j.requests.find({"channel": "telegram"})]
    assert sorted(d["category"] for d in docs) == ["elevator_trapped", "gas_smell"]
    assert len(docs) == 2


async def test_replies_retry_after_429_and_record_a_blocked_user(
    tg_hub: Hub, standin: TelegramStandIn, tg_settings: Settings
) -> None:
    standin.rate_limited = 2
    standin.add_update(message_update(20, 888001, 1, "Прорвало трубу, хлещет вода! Ленина 12 кв 45"))
    sent = await wait_for(lambda: standin.sent_to("888001"), timeout=20)
    assert len(sent) == 1 and standin.calls.count("sendMessage") >= 3

    standin.blocked_chats.add("888002")
    standin.add_update(message_update(21, 888002, 1, "Прорвало трубу, хлещет вода! Ленина 14 кв 5"))
    async with journal_of(tg_settings) as j:
        record = await wait_for(lambda: j.deliveries.find_one({"status": "failed"}))
        failed = {**await j.messages.find_one({"_id": record["_id"]}), "delivery": record}
    assert failed["address"] == "888002" and "blocked" in failed["delivery"]["error"]


async def test_photo_bytes_are_stored_with_the_message(
    tg_hub: Hub, standin: TelegramStandIn, tg_settings: Settings
) -> None:
    standin.files["big"] = ("photos/file_7.jpg", b"\xff\xd8\xff" + b"jpeg" * 500)
    photo = [
        {"file_id": "small", "file_unique_id": "s", "file_size": 100, "width": 90, "height": 60},
        {"file_id": "big", "file_unique_id": "b", "file_size": 2003, "width": 1280, "height": 960},
    ]
    standin.add_update(
        message_update(30, 999001, 5, None, photo=photo, caption="Течёт с потолка в подъезде, ул. Ленина 12")
    )
    async with journal_of(tg_settings) as j:
        doc = await wait_for(lambda: j.messages.find_one({"_id": "telegram:999001:5"}))
        attachment = doc["attachments"][0]
        assert attachment["kind"] == "photo" and attachment["location"].startswith("gridfs:")
        stored = await j.read_file(attachment["location"])
        assert stored is not None and stored[0] == standin.files["big"][1]


async def test_edit_updates_the_request_text_without_a_new_request(
    tg_hub: Hub, standin: TelegramStandIn, tg_settings: Settings
) -> None:
    standin.add_update(message_update(40, 555001, 9, "течёт батарея в комнате, Гоголя 14 кв 6"))
    await wait_for(lambda: standin.sent_to("555001"))
    edited = message_update(41, 555001, 9, "течёт батарея в комнате, Гоголя 14 кв 8")
    edited["edited_message"] = edited.pop("message")
    edited["edited_message"]["edit_date"] = int(time.time()) + 5
    standin.add_update(edited)
    async with journal_of(tg_settings) as j:
        doc = await wait_for(lambda: j.requests.find_one({"text_history.0": {"$exists": True}}))
        assert doc["text"].endswith("кв 8") and doc["text_history"][0]["text"].endswith("кв 6")
        assert await j.requests.count_documents({}) == 1
        replies = await j.messages.count_documents({"conversation_id": "telegram:555001", "direction": "out"})
    assert replies == 1, "the edit was recorded with a reply of its own"
    assert len(standin.sent_to("555001")) == 1


async def test_status_command_and_survey_button(tg_hub: Hub, standin: TelegramStandIn, tg_settings: Settings) -> None:
    standin.add_update(message_update(50, 444001, 1, "засор канализации, вода не уходит у всего стояка, Мира 3 кв 5"))
    reply = (await wait_for(lambda: standin.sent_to("444001")))[0]
    number = reply["text"].split("№ ")[1].split()[0]
    assert reply["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == f"status:{number}"
    standin.add_update(
        message_update(51, 444001, 2, f"/status {number}", entities=[{"offset": 0, "length": 7, "type": "bot_command"}])
    )
    status = await wait_for(lambda: [m for m in standin.sent_to("444001") if "Статус" in m["text"]])
    assert number in status[0]["text"] and "зарегистрирована" in status[0]["text"]
    standin.add_update(
        {
            "update_id": 52,
            "callback_query": {
                "id": "cb-1",
                "from": {"id": 444001, "is_bot": False, "first_name": "Ирина"},
                "chat_instance": "1",
                "data": f"survey:{number}:4",
                "message": {"message_id": 3, "date": int(time.time()), "chat": {"id": 444001, "type": "private"}},
            },
        }
    )
    async with journal_of(tg_settings) as j:
        rated = await wait_for(lambda: j.requests.find_one({"_id": number, "survey.rating": 4}))
    assert rated is not None and "cb-1" in standin.answered_callbacks


async def test_shared_contact_joins_the_phone_to_the_person(
    tg_hub: Hub, standin: TelegramStandIn, tg_settings: Settings
) -> None:
    update = message_update(
        60, 123456789, 414, None, contact={"phone_number": "79161234567", "first_name": "Ирина", "user_id": 123456789}
    )
    standin.add_update(update)
    async with journal_of(tg_settings) as j:
        contact = await wait_for(lambda: j.contacts.find_one({"identities": "phone:+79161234567"}))
    assert "telegram:123456789" in contact["identities"]
    saved = await wait_for(lambda: standin.sent_to("123456789"))
    assert "+79161234567" in saved[0]["text"] or "сохранён" in saved[0]["text"]


async def test_webhook_checks_the_secret_token(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, standin: TelegramStandIn
) -> None:
    settings = make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        telegram_token=TOKEN,
        telegram_api_base=standin.base,
        telegram_webhook_url="https://hub.example.ru/tg/hook",
        telegram_webhook_secret="s3cret-token_1",
    )
    hub = Hub(settings, ["router", "telegram"])
    await hub.start()
    try:
        await wait_for(lambda: standin.webhook.get("secret_token") == "s3cret-token_1")
        url = f"http://127.0.0.1:{hub.port}/tg/hook"
        body = message_update(70, 321001, 1, "Прорвало трубу горячей воды в подвале, Садовая 3")
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=body, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as r:
                assert r.status == 403
            async with http.post(url, json=body) as r:
                assert r.status == 403
            async with http.post(
                url,
                data=b"{not json",
                headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token_1", "Content-Type": "application/json"},
            ) as r:
                assert r.status == 400
            async with http.post(url, json=body, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token_1"}) as r:
                assert r.status == 200
        sent = await wait_for(lambda: standin.sent_to("321001"))
        assert "зарегистрирована" in sent[0]["text"]
    finally:
        await hub.stop()
        await cleanup_topology(settings)


@pytest.mark.fault
async def test_a_30_second_bot_api_outage_loses_nothing(
    tg_hub: Hub, standin: TelegramStandIn, tg_settings: Settings
) -> None:
    standin.add_update(message_update(80, 600001, 1, "Нет света во всём доме, Лесная 10"))
    await wait_for(lambda: standin.sent_to("600001"))
    standin.outage(30)
    standin.add_update(message_update(81, 600002, 1, "Из щитка дым и искры! Лесная 10, 3 этаж"))
    standin.add_update(message_update(82, 600003, 1, "Пахнет газом на кухне, Лесная 12 кв 4"))
    refused = standin.refused
    await wait_for(lambda: standin.refused >= refused + 2, timeout=20, what="the hub retrying during the outage")
    assert not standin.sent_to("600002")
    for chat in ("600002", "600003"):
        sent = await wait_for(lambda chat=chat: standin.sent_to(chat), timeout=70)
        assert len(sent) == 1 and "зарегистрирована" in sent[0]["text"]


async def test_a_dispatchers_file_goes_as_a_document(tg_hub: Hub, standin: TelegramStandIn) -> None:
    from adshub.contract import Outbound, OutboundFile

    assert tg_hub.journal is not None and tg_hub.bus is not None
    ref = await tg_hub.journal.store_file(b"%PDF-1.4 act", "акт.pdf", "application/pdf", {"kind": "files"})
    await tg_hub.bus.publish_outbound(
        Outbound(
            id="dispatcher:file-test-1",
            channel="telegram",
            address="777900",
            text="Акт во вложении",
            kind="dispatcher",
            author="anna",
            files=[OutboundFile(ref=ref, name="акт.pdf", content_type="application/pdf", size=12)],
        )
    )
    documents = await wait_for(lambda: [d for d in standin.documents if d["chat_id"] == "777900"])
    assert documents[0]["filename"] == "акт.pdf" and documents[0]["data"] == b"%PDF-1.4 act"
    assert standin.sent_to("777900")[0]["text"] == "Акт во вложении"
