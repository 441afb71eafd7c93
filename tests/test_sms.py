"""SMS through the SMS.ru stand-in: parts counted as the network carries them, a daily cap shared through
the journal, and a voicemail caller told the number and deadline within the inform clock."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from adshub.contract import Outbound
from adshub.errors import PermanentDeliveryError, RetryableDeliveryError
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from channels.base import ChannelContext
from channels.sms import Sms, fit, sms_parts
from channels.voicemail.webhook import hook_signature
from domain.paid import rubles
from journal.users import Users
from tests.helpers import Dispatcher, cleanup_topology, journal_of, make_settings, register_from_chat, wait_for
from tests.standins.smsru import SmsRuStandIn

API_ID = "0000AAAA-1111-BBBB-2222-CCCC3333DDDD"


def test_cyrillic_goes_in_70_characters_alone_and_67_per_part() -> None:
    assert sms_parts("ж" * 70) == ["ж" * 70]
    assert [len(p) for p in sms_parts("ж" * 71)] == [67, 4]
    assert [len(p) for p in sms_parts("ж" * 134)] == [67, 67]
    assert len(sms_parts("ж" * 135)) == 3
    assert "".join(sms_parts("Заявка № 2026-000123 принята. " * 9)) == "Заявка № 2026-000123 принята. " * 9


def test_latin_goes_in_160_septets_and_escapes_count_twice() -> None:
    assert len(sms_parts("a" * 160)) == 1
    assert [len(p) for p in sms_parts("a" * 161)] == [153, 8]
    assert len(sms_parts("[" * 80)) == 1 and len(sms_parts("[" * 81)) == 2
    assert all(sum(2 if c == "[" else 1 for c in p) <= 153 for p in sms_parts("a[" * 100))


def test_a_part_never_splits_a_surrogate_pair() -> None:
    text = "ж" * 66 + "🚿" + "ж" * 10
    parts = sms_parts(text)
    assert parts[0] == "ж" * 66 and parts[1].startswith("🚿") and "".join(parts) == text


def test_fit_cuts_at_a_word_within_the_parts() -> None:
    long = "слово " * 200
    cut = fit(long, max_parts=2)
    assert len(sms_parts(cut)) <= 2 and cut.endswith("…") and cut.removesuffix("…").strip().endswith("слово")
    assert fit("коротко") == "коротко"


@pytest.fixture
async def gateway() -> AsyncIterator[SmsRuStandIn]:
    standin = SmsRuStandIn(API_ID)
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
def sms_settings(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, gateway: SmsRuStandIn
) -> Settings:
    return make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        voicemail_webhook_secret="hook-secret",
        sms_ru_api_id=API_ID,
        sms_api_base=gateway.base,
        sms_status_poll_seconds=0.2,
        sms_daily_parts=5,
        company_phone="+7 495 000-00-00",
    )


def outbound(text: str, number: str = "+79161234567") -> Outbound:
    return Outbound(id=f"test:{time.monotonic_ns()}", channel="sms", address=number, text=text, kind="notice")


async def test_the_daily_cap_refuses_with_the_reason_and_a_gateway_hiccup_gives_its_parts_back(
    sms_settings: Settings, gateway: SmsRuStandIn
) -> None:
    async with journal_of(sms_settings) as j:
        await j.prepare()
        channel = Sms(ChannelContext(settings=sms_settings, journal=j))
        try:
            two_parts = "ж" * 100
            assert await channel.send(outbound(two_parts)) == "sent"
            gateway.down_for = 1
            with pytest.raises(RetryableDeliveryError):
                await channel.send(outbound(two_parts))
            assert await channel.send(outbound(two_parts)) == "sent"
            with pytest.raises(PermanentDeliveryError, match="limit of 5 parts"):
                await channel.send(outbound(two_parts))
            assert await channel.send(outbound("ж" * 60)) == "sent"
            assert [m["parts"] for m in gateway.sent] == [2, 2, 1]
            day = datetime.now(UTC).astimezone(sms_settings.zone).date().isoformat()
            assert await j.quota_used(f"sms-parts:{day}") == 5
            with pytest.raises(PermanentDeliveryError):
                await channel.send(outbound("ж", number="12"))
        finally:
            await channel.stop()
        await j.drop()


@pytest.fixture
async def sms_hub(sms_settings: Settings) -> AsyncIterator[tuple[Hub, Dispatcher]]:
    """A hub taking voicemail and the web chat, sending SMS, with the inbox and a dispatcher (not signed in)."""
    hub = Hub(sms_settings, ["router", "voicemail", "webchat", "sms", "inbox"])
    await hub.start()
    dispatcher = Dispatcher(f"http://127.0.0.1:{hub.port}")
    assert hub.journal is not None
    await Users(hub.journal).add("anna", "dispatcher-pass", "dispatcher", "Анна Диспетчер")
    yield hub, dispatcher
    await dispatcher.close()
    await hub.stop()
    await cleanup_topology(sms_settings)


async def test_a_voicemail_caller_gets_the_number_and_deadline_by_sms_and_is_recorded_informed(
    sms_settings: Settings, sms_hub: tuple[Hub, Dispatcher], gateway: SmsRuStandIn
) -> None:
    hub, dispatcher = sms_hub
    url = f"http://127.0.0.1:{hub.port}/telephony/voicemail"
    async with aiohttp.ClientSession() as http:
        for call_id, caller, transcript in (
            ("pbx-1", "8 (912) 300-44-17", "прорвало трубу горячей воды в ванной, ул. Ленина 5 кв 12"),
            ("pbx-2", "8 (495) 123-45-67", "течёт крыша над подъездом, ул. Ленина 7"),
        ):
            body = json.dumps({"id": call_id, "caller": caller, "transcript": transcript}).encode()
            stamp = str(int(time.time()))
            headers = {
                "X-Adshub-Timestamp": stamp,
                "X-Adshub-Signature": hook_signature("hook-secret", stamp, body),
            }
            async with http.post(url, data=body, headers=headers) as response:
                assert response.status == 200
    async with journal_of(sms_settings) as j:
        mobile = await wait_for(lambda: j.requests.find_one({"contact.phone": "+79123004417"}), what="request")
        landline = await wait_for(lambda: j.requests.find_one({"contact.phone": "+74951234567"}), what="request")
        await wait_for(lambda: gateway.sent, what="an SMS at the gateway")
        sms = gateway.sent[0]
        assert sms["to"] == "79123004417"
        assert f"заявка № {mobile['number']} принята" in sms["msg"] and "Тел. +7 495 000-00-00" in sms["msg"]
        assert "до " in sms["msg"]
        report = await wait_for(
            lambda: j.delivery_reports.find_one({"gateway_id": sms["id"], "state": "delivered"}),
            what="the handset's delivery report",
        )
        assert report["cost"] == 3.5 * sms["parts"] and report["request_number"] == mobile["number"]
        informed = (await j.with_inform([mobile]))[0]["clocks"]["inform"]
        assert informed["met"] is True and informed["done_at"] <= informed["due_at"]
        assert await j.tasks.count_documents({"kind": "callback", "request_number": mobile["number"]}) == 1
        assert await j.messages.count_documents({"direction": "out", "channel": "sms"}) == 1
        assert await j.messages.count_documents({"request_number": landline["number"], "direction": "out"}) == 0
        assert len(gateway.sent) == 1
    assert (await dispatcher.login("anna", "dispatcher-pass"))[0] == 200
    status, page = await dispatcher.get(f"/inbox/c/{quote(mobile['conversation_id'])}")
    assert status == 200
    shown = re.sub(r"[ \t\r\n]+", " ", html.unescape(page))
    assert f"доставлено на телефон · {sms['parts']} SMS · {rubles(report['cost'])}" in shown


async def test_an_executor_without_telegram_is_told_of_the_assignment_by_sms(
    sms_hub: tuple[Hub, Dispatcher], gateway: SmsRuStandIn
) -> None:
    hub, dispatcher = sms_hub
    assert hub.journal is not None
    await hub.journal.staff.insert_one(
        {"_id": "p1", "name": "Иванов Иван", "trade": "сантехник", "phone": "+7 916 111-22-33", "active": True}
    )
    chat, number = await register_from_chat(hub, "sms-executor", "Течёт труба под раковиной, ул. Лесная 4, кв. 7")
    await chat.http.close()
    assert (await dispatcher.login("anna", "dispatcher-pass"))[0] == 200
    assert (await dispatcher.post(f"/inbox/r/{number}/assign", {"staff": "p1"}))[0] == 200
    sent = await wait_for(lambda: [m for m in gateway.sent if m["to"] == "79161112233"], what="the executor's SMS")
    assert sent[0]["msg"].startswith(f"Заявка № {number}") and "Лесная" in sent[0]["msg"]
