"""A channel added from outside the hub's code: one file (``tests/channel_loopback.py``) and the registry
line below. It takes messages in over its own webhook and gets the registration reply back; the inbox
and the exported journal name it by its own title."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openpyxl
import pytest

from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from channels import register
from journal.users import Users
from tests.channel_loopback import Loopback
from tests.helpers import Dispatcher, make_settings, running_hub, wait_for

register("loopback", "tests.channel_loopback:Loopback")


@pytest.fixture
async def loop_hub(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path) -> AsyncIterator[Hub]:
    settings = make_settings(database, rabbitmq, unique, tmp_path, loopback_enabled=True)
    async with running_hub(settings, ["router", "inbox", "loopback"]) as hub:
        yield hub


async def test_a_registered_channel_takes_messages_in_and_gets_replies(loop_hub: Hub) -> None:
    (channel,) = [c for c in loop_hub.channels if isinstance(c, Loopback)]
    base = f"http://127.0.0.1:{loop_hub.port}"
    async with aiohttp.ClientSession() as http:
        body = {"id": "m1", "from": "anna", "text": "Прорвало трубу в подвале, хлещет вода! Ленина 5"}
        async with http.post(f"{base}/loopback/hook", json=body) as response:
            assert response.status == 200 and (await response.json()) == {"taken": True}
        async with http.post(f"{base}/loopback/hook", json={"id": 5}) as response:
            assert response.status == 200 and (await response.json()) == {"taken": False}
    sent = await wait_for(lambda: channel.sent)
    reply = sent[0]
    assert reply.channel == "loopback" and reply.address == "anna"
    assert reply.request_number and reply.request_number in reply.text and "зарегистрирована" in reply.text

    assert loop_hub.journal is not None
    request = await loop_hub.journal.request(reply.request_number)
    assert request is not None and request["channel"] == "loopback" and request["emergency"] is True
    await Users(loop_hub.journal).add("anna", "dispatcher-pass", "dispatcher")
    dispatcher = Dispatcher(base)
    try:
        assert (await dispatcher.login("anna", "dispatcher-pass"))[0] == 200
        _, page = await dispatcher.get("/inbox/")
        assert "Петля (тестовый канал)" in page
        async with dispatcher.http.get(f"{base}/inbox/journal/export?format=xlsx") as response:
            book = openpyxl.load_workbook(io.BytesIO(await response.read()))
        cells = [c.value for row in book.active.iter_rows() for c in row]
        assert "Петля (тестовый канал)" in cells
    finally:
        await dispatcher.close()
