"""An executor who prefers Telegram: links the chat once with the code a dispatcher gives, gets the
assignment with the crew buttons, presses them (a redelivered press counts once), closes with a photo,
what was done and the materials — against the Telegram stand-in. The resident is told the visit, the
progress and the closing with the survey; the executor's messages never become residents' requests."""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from journal.users import Users
from tests.helpers import Dispatcher, cleanup_topology, journal_of, make_settings, wait_for
from tests.standins.telegram_api import TelegramStandIn, message_update
from tests.test_browser_crew import PLUMBER, png

TOKEN = "123456:TEST-token-for-the-crew"
RESIDENT, EXECUTOR = 777100, 900001


@pytest.fixture
async def crew_tg(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, standin: TelegramStandIn
) -> AsyncIterator[tuple[Hub, Settings]]:
    settings = make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        telegram_token=TOKEN,
        telegram_api_base=standin.base,
        telegram_poll_timeout=1,
        telegram_bot_username="@uk_ads_bot",
    )
    hub = Hub(settings, ["router", "telegram", "inbox"])
    await hub.start()
    assert hub.journal is not None
    await Users(hub.journal).add("anna", "crew-pass-1", "admin", "Анна Старшая")
    every_hour = {str(d): [["00:00", "23:59"]] for d in range(7)}
    await hub.journal.staff.insert_one(
        {
            "_id": "plumber",
            "name": PLUMBER,
            "trade": "plumber",
            "phone": "+79000000001",
            "active": True,
            "hours": every_hour,
        }
    )
    yield hub, settings
    await hub.stop()
    await cleanup_topology(settings)


def press(update_id: int, callback_id: str, data: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "callback_query": {
            "id": callback_id,
            "from": {"id": EXECUTOR, "is_bot": False, "first_name": "Пётр"},
            "chat_instance": "9",
            "data": data,
            "message": {"message_id": 1, "date": int(time.time()), "chat": {"id": EXECUTOR, "type": "private"}},
        },
    }


def button_data(message: dict[str, Any]) -> list[str]:
    markup = message.get("reply_markup") or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


async def test_an_executor_works_a_request_from_telegram(
    crew_tg: tuple[Hub, Settings], standin: TelegramStandIn, tmp_path: Path
) -> None:
    hub, settings = crew_tg
    dispatcher = Dispatcher(f"http://127.0.0.1:{hub.port}")
    try:
        assert (await dispatcher.login("anna", "crew-pass-1"))[0] == 200
        _, link_page = await dispatcher.get("/inbox/staff")
        status, link_page = await dispatcher.post("/inbox/staff/plumber/link", {})
        assert status == 200
        command = re.search(r'class="crew-link telegram-command" readonly value="([^"]+)"', link_page)
        assert command and command.group(1).startswith("/start crew-")
        deep_link = re.search(r'class="crew-link telegram-link" readonly value="([^"]+)"', link_page)
        assert deep_link, "the page gives a link that opens the bot"
        assert deep_link.group(1) == f"https://t.me/uk_ads_bot?start={command.group(1).removeprefix('/start ')}"

        entity = [{"offset": 0, "length": 6, "type": "bot_command"}]
        tapped = "/start " + deep_link.group(1).split("?start=")[1]
        standin.add_update(message_update(1, EXECUTOR, 1, tapped, entities=entity))
        greeting = await wait_for(lambda: standin.sent_to(str(EXECUTOR)), what="the bot greets the executor")
        assert PLUMBER in greeting[0]["text"]
        await wait_for(lambda: any("заявок нет" in m["text"] for m in standin.sent_to(str(EXECUTOR))))

        standin.add_update(
            message_update(2, RESIDENT, 1, "Течёт труба горячей воды под раковиной, ул. Лесная 4, кв. 7")
        )
        registered = await wait_for(lambda: standin.sent_to(str(RESIDENT)), what="the resident's registration")
        number = registered[0]["text"].split("№ ")[1].split()[0]

        _, card = await dispatcher.get(f"/inbox/r/{number}")
        start = re.search(r'name="start" value="([^"]+)"', card)
        assert start, "the card offers the plumber's free time"
        status, _ = await dispatcher.post(
            f"/inbox/r/{number}/book", {"staff": "plumber", "start": html.unescape(start.group(1)), "reason": ""}
        )
        assert status in (200, 303)
        assignment = await wait_for(
            lambda: [m for m in standin.sent_to(str(EXECUTOR)) if "назначена заявка" in m["text"]],
            what="the assignment in the executor's chat",
        )
        assert f"crew:accepted:{number}" in button_data(assignment[0])
        visit = await wait_for(lambda: [m for m in standin.sent_to(str(RESIDENT)) if "придёт" in m["text"]])
        assert PLUMBER in visit[0]["text"]

        standin.add_update(press(3, "cb-accept", f"crew:accepted:{number}"))
        standin.add_update(press(4, "cb-accept", f"crew:accepted:{number}"))
        async with journal_of(settings) as j:
            await wait_for(lambda: j.requests.find_one({"_id": number, "status": "accepted"}), what="accepted")
            for n, step in enumerate(("on_way", "on_site", "localized"), start=5):
                standin.add_update(press(n, f"cb-{step}", f"crew:{step}:{number}"))
            await wait_for(lambda: j.requests.find_one({"_id": number, "status": "localized"}), what="localized")
            standin.add_update(press(9, "cb-done", f"crew:done:{number}"))
            await wait_for(lambda: [m for m in standin.sent_to(str(EXECUTOR)) if "напишите, что сделано" in m["text"]])

            standin.files["photo-1"] = ("photos/file_1.png", png(tmp_path / "p.png").read_bytes())
            photo = [{"file_id": "photo-1", "file_unique_id": "u1", "width": 8, "height": 8, "file_size": 100}]
            standin.add_update(message_update(10, EXECUTOR, 2, None, photo=photo))
            await wait_for(
                lambda: [m for m in standin.sent_to(str(EXECUTOR)) if "Фото получено" in m["text"]],
                what=f"photo acknowledged; executor saw {[m['text'][:40] for m in standin.sent_to(str(EXECUTOR))]}",
            )
            standin.add_update(message_update(11, EXECUTOR, 3, "Заменил участок трубы под раковиной"))
            await wait_for(lambda: [m for m in standin.sent_to(str(EXECUTOR)) if "материалы" in m["text"]])
            standin.add_update(message_update(12, EXECUTOR, 4, "труба PPR 20 мм — 0,5 м; муфта — 2 шт"))

            closed = await wait_for(
                lambda: j.requests.find_one({"_id": number, "status": "done", "next_due_at": None}),
                what="closed, clocks stopped",
            )
            assert closed["result"]["result"] == "Заменил участок трубы под раковиной"
            assert closed["result"]["materials"] == "труба PPR 20 мм — 0,5 м; муфта — 2 шт"
            assert len(closed["result"]["photos"]) == 1
            assert all(c.get("done_at") and c.get("met") for c in closed["clocks"].values()), closed["clocks"]
            assert await j.crew_actions.count_documents({"request": number, "step": "accepted"}) == 1
            assert await j.requests.count_documents({}) == 1
            survey = await wait_for(lambda: [m for m in standin.sent_to(str(RESIDENT)) if "Оцените" in m["text"]])
            assert "выполнена" in survey[0]["text"]
            await wait_for(lambda: [m for m in standin.sent_to(str(EXECUTOR)) if "закрыта" in m["text"]])
            confirmations = [m for m in standin.sent_to(str(EXECUTOR)) if "«Принял»" in m["text"]]
            assert len(confirmations) == 1
    finally:
        await dispatcher.close()
