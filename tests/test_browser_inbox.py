"""The dispatcher and the resident in real browsers: live arrival, an answer through the chat,
hostile HTML shown as text, a refused wrong password and a refused forged form."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from journal.users import Users
from tests.browser import chromium
from tests.helpers import cleanup_topology, make_settings

pytestmark = pytest.mark.browser


@pytest.fixture
async def web_hub(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path) -> AsyncIterator[Hub]:
    settings: Settings = make_settings(database, rabbitmq, unique, tmp_path)
    hub = Hub(settings, ["router", "webchat", "inbox"])
    await hub.start()
    assert hub.journal is not None
    await Users(hub.journal).add("anna", "dispatcher-pass", "dispatcher", "Анна")
    yield hub
    await hub.stop()
    await cleanup_topology(settings)


async def test_dispatcher_sees_a_new_chat_live_and_answers_it(web_hub: Hub) -> None:
    base = f"http://127.0.0.1:{web_hub.port}"
    async with chromium() as browser:
        dispatcher = await (await browser.new_context()).new_page()
        dialogs: list[str] = []
        dispatcher.on("dialog", lambda d: dialogs.append(d.message))
        await dispatcher.goto(f"{base}/inbox/")
        await dispatcher.fill("input[name=login]", "anna")
        await dispatcher.fill("input[name=password]", "wrong-password")
        await dispatcher.click("button[type=submit]")
        await dispatcher.locator(".error").filter(has_text="Неверный логин или пароль").wait_for()
        await dispatcher.fill("input[name=login]", "anna")
        await dispatcher.fill("input[name=password]", "dispatcher-pass")
        await dispatcher.click("button[type=submit]")
        await dispatcher.locator("h1").filter(has_text="Входящие").wait_for()
        await dispatcher.wait_for_timeout(500)

        resident = await (await browser.new_context()).new_page()
        resident.on("dialog", lambda d: dialogs.append(d.message))
        await resident.goto(f"{base}/chat")
        await resident.locator(".adshub-status").filter(has_text="На связи").wait_for(timeout=10_000)
        box = resident.locator(".adshub-input")
        await box.fill("<img src=x onerror=alert(1)> В подвале прорвало трубу горячей воды, Лесная 4")
        await box.press("Enter")
        await resident.locator(".adshub-request").wait_for(timeout=5_000)

        row = dispatcher.locator(".row-item.emergency a.open")
        await row.wait_for(timeout=1_000)
        assert dispatcher.url.endswith("/inbox/")
        await row.click()
        thread_text = await dispatcher.locator(".thread").inner_text()
        assert "<img src=x onerror=alert(1)>" in thread_text
        assert await dispatcher.locator(".thread img[src=x]").count() == 0

        await dispatcher.fill("#reply-text", "Бригада выехала, будет через 20 минут")
        await dispatcher.get_by_role("button", name="Отправить", exact=True).click()
        answer = resident.locator(".adshub-msg.dispatcher")
        await answer.wait_for(timeout=5_000)
        assert "Бригада выехала, будет через 20 минут" in await answer.inner_text()
        await dispatcher.locator(".delivery.sent").last.wait_for(timeout=5_000)

        await dispatcher.evaluate("document.querySelector('form.reply input[name=csrf]').value = 'forged'")
        await dispatcher.fill("#reply-text", "подделка")
        await dispatcher.get_by_role("button", name="Отправить", exact=True).click()
        await dispatcher.locator("h1").filter(has_text="403").wait_for()
        assert await resident.locator(".adshub-msg.dispatcher").count() == 1
        assert dialogs == []
