"""A resident picks the visit time from the bot's buttons (minor repairs, paid works): the choice books the
executor, the visit notice follows; a time taken meanwhile is refused with the times still free."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from tests.helpers import ChatClient, cleanup_topology, connect_chat, make_settings, wait_for

HANDYMAN = "Мастеров Иван Петрович"


@pytest.fixture
async def repair_hub(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path) -> AsyncIterator[Hub]:
    settings: Settings = make_settings(database, rabbitmq, unique, tmp_path)
    hub = Hub(settings, ["router", "webchat", "inbox"])
    await hub.start()
    assert hub.journal is not None
    every_hour = {str(d): [["00:00", "23:59"]] for d in range(7)}
    await hub.journal.staff.insert_one(
        {
            "_id": "handy",
            "name": HANDYMAN,
            "trade": "handyman",
            "phone": "+79000000003",
            "active": True,
            "hours": every_hour,
        }
    )
    yield hub
    await hub.stop()
    await cleanup_topology(settings)


async def times_offered(chat: ChatClient, text: str) -> tuple[str, list[dict[str, Any]]]:
    await chat.send("m1", text)
    frames = await chat.frames_until(lambda fs: any(f.get("buttons") and "удобно" in str(f.get("text")) for f in fs))
    registered = next(f for f in frames if f.get("request"))
    offer = next(f for f in frames if f.get("buttons") and "удобно" in str(f.get("text")))
    return registered["request"]["number"], [row[0] for row in offer["buttons"]]


async def test_the_resident_chooses_a_time_and_a_taken_one_is_refused(repair_hub: Hub) -> None:
    journal = repair_hub.journal
    assert journal is not None
    async with aiohttp.ClientSession() as http:
        first = await connect_chat(http, repair_hub.port or 0, "repair-1")
        second = await connect_chat(http, repair_hub.port or 0, "repair-2")
        number, buttons = await times_offered(first, "Не закрывается дверь в подъезд, сломан доводчик, ул. Лесная 4")
        assert 1 <= len(buttons) <= 4 and all(b["data"].startswith(f"slot:{number}:") for b in buttons)
        other, other_buttons = await times_offered(second, "Сломан почтовый ящик в подъезде, ул. Лесная 4 кв. 9")
        assert other_buttons[0]["text"] == buttons[0]["text"]

        await first.ws.send_json({"type": "button", "id": "b1", "data": buttons[0]["data"]})
        visit = await first.frames_until(lambda fs: any("придёт" in str(f.get("text")) for f in fs))
        notice = next(f for f in visit if "придёт" in str(f.get("text")))
        assert HANDYMAN in notice["text"] and buttons[0]["text"].split()[-1] in notice["text"]
        booked = await wait_for(lambda: journal.bookings.find_one({"request_number": number, "status": "booked"}))
        assert booked["staff_id"] == "handy"
        request = await journal.requests.find_one({"_id": number})
        assert request is not None and request["executor"]["id"] == "handy" and request["visit"]["employee"] == HANDYMAN

        await second.ws.send_json({"type": "button", "id": "b2", "data": other_buttons[0]["data"]})
        refused = await second.frames_until(lambda fs: any("уже заняли" in str(f.get("text")) for f in fs))
        answer = next(f for f in refused if "уже заняли" in str(f.get("text")))
        fresh = [row[0]["data"] for row in answer.get("buttons") or []]
        assert fresh and other_buttons[0]["data"].split(":")[2] not in [d.split(":")[2] for d in fresh]
        assert all(d.startswith(f"slot:{other}:") for d in fresh)
        assert await journal.bookings.count_documents({"status": "booked"}) == 1

        await second.ws.send_json({"type": "button", "id": "b3", "data": fresh[0]})
        await second.frames_until(lambda fs: any("придёт" in str(f.get("text")) for f in fs))
        assert await journal.bookings.count_documents({"status": "booked"}) == 2
        await first.ws.close()
        await second.ws.close()
