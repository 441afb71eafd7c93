"""The night shift in real browsers: a flood at night raises the alert in a second open inbox, the
dispatcher finds the resident by phone, takes the conversation, answers with a canned reply, assigns a
plumber and closes the request — no clock of it is left open or breached, and the night's export has the
result, the phone and the executor. Screenshots of the list, the conversation and the request at 1280 and
390 px are kept in ``ADSHUB_ARTIFACTS`` (default ``var/artifacts``) for a person to look at."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openpyxl
import pytest
from playwright.async_api import Browser, BrowserContext, Page

from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from journal.users import Users
from tests.browser import chromium
from tests.helpers import REPO, cleanup_topology, make_settings, wait_for

pytestmark = pytest.mark.browser

ARTIFACTS = Path(os.environ.get("ADSHUB_ARTIFACTS", REPO / "var" / "artifacts"))
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


@pytest.fixture
async def night_hub(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path) -> AsyncIterator[Hub]:
    settings: Settings = make_settings(database, rabbitmq, unique, tmp_path, clock_warning_minutes=5)
    hub = Hub(settings, ["router", "webchat", "inbox"])
    await hub.start()
    assert hub.journal is not None
    users = Users(hub.journal)
    await users.add("anna", "night-pass-1", "dispatcher", "Анна Ночная")
    await users.add("boris", "night-pass-2", "dispatcher", "Борис Дежурный")
    await hub.journal.staff.insert_one(
        {"_id": "plumber", "name": "Пётр Сантехник", "trade": "сантехник", "phone": "+79000000001", "active": True}
    )
    yield hub
    await hub.stop()
    await cleanup_topology(settings)


async def signed_in(browser: Browser, base: str, login: str, password: str, width: str = "desktop") -> Page:
    w, h = WIDTHS[width]
    context: BrowserContext = await browser.new_context(viewport={"width": w, "height": h})
    await context.grant_permissions(["notifications"], origin=base)
    page = await context.new_page()
    await page.goto(f"{base}/inbox")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.locator(".queues").wait_for()
    return page


async def shoot(page: Page, name: str) -> None:
    """Both widths of the page as it is now; the page is left at the desktop width."""
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    for width, (w, h) in WIDTHS.items():
        await page.set_viewport_size({"width": w, "height": h})
        await page.wait_for_timeout(150)
        await page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        if width == "phone":
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} is {overflow}px wider than a 390px phone"
    await page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})


async def test_the_night_of_a_flood(night_hub: Hub) -> None:
    base = f"http://127.0.0.1:{night_hub.port}"
    journal = night_hub.journal
    assert journal is not None
    async with chromium() as browser:
        boris = await signed_in(browser, base, "boris", "night-pass-2")
        await boris.click("#alerts-toggle")
        await boris.locator("#alerts-toggle.on").wait_for()
        anna = await signed_in(browser, base, "anna", "night-pass-1")

        resident = await (await browser.new_context(viewport={"width": 390, "height": 844})).new_page()
        await resident.goto(f"{base}/chat")
        await resident.locator(".adshub-status").filter(has_text="На связи").wait_for(timeout=10_000)
        await resident.locator(".adshub-input").fill(
            "Помогите! Сверху заливают, с потолка на кухне хлещет вода. Гагарина 5 кв 18, тел 8 916 123-45-67"
        )
        await resident.locator(".adshub-input").press("Enter")
        badge = resident.locator(".adshub-request")
        await badge.wait_for(timeout=5_000)
        number = str(await badge.get_attribute("data-number"))

        alert = boris.locator("#live-alert")
        await alert.filter(has_text=f"№ {number}").wait_for(timeout=2_000)
        assert "Новая авария" in await alert.inner_text()
        assert (await boris.title()).startswith("⚠")
        signals = await boris.evaluate("window.adshubInbox")
        assert signals["notifications"] >= 1 and signals["sounds"] >= 1, signals
        await boris.locator(".row-item.emergency").first.wait_for()
        await shoot(boris, "list")

        await anna.fill(".search-box input", "89161234567")
        await anna.press(".search-box input", "Enter")
        found = anna.locator("ol.results .row-item").filter(has_text=number)
        await found.wait_for()
        await found.get_by_role("link", name="переписка").click()
        await anna.locator(".conversation-head").wait_for()
        await anna.get_by_role("button", name="Взять себе").click()
        await anna.locator(".taken.mine").filter(has_text="Анна Ночная").wait_for()
        await boris.locator(".row-item .taken").filter(has_text="ведёт Анна Ночная").wait_for(timeout=5_000)

        await anna.select_option("#canned", label="Бригада выехала")
        reply_text = await anna.input_value("#reply-text")
        assert number in reply_text and "{номер}" not in reply_text
        await anna.get_by_role("button", name="Отправить", exact=True).click()
        answer = resident.locator(".adshub-msg.dispatcher")
        await answer.wait_for(timeout=5_000)
        assert "Аварийная бригада выехала" in await answer.inner_text()
        await anna.locator(".delivery.sent").last.wait_for(timeout=5_000)

        await anna.select_option(".request-card select[name=staff] >> nth=0", label="Пётр Сантехник — сантехник")
        await anna.get_by_role("button", name="Назначить").click()
        await anna.locator(".executor-now").filter(has_text="Пётр Сантехник").wait_for()
        await shoot(anna, "conversation")

        await anna.goto(f"{base}/inbox/r/{number}")
        await anna.select_option(".close-form .status-select", "done")
        await anna.fill(".close-form input[name=result]", "Перекрыт стояк, заменён участок трубы")
        await anna.fill(".close-form input[name=materials]", "труба ПП 20 мм — 1 м, муфты — 2 шт.")
        await anna.get_by_role("button", name="Сменить статус").click()
        await anna.locator(".request-card .status").filter(has_text="выполнена").wait_for()
        await resident.locator(".adshub-msg .buttons button").first.wait_for(timeout=5_000)
        await shoot(anna, "request")

        request = await wait_for(lambda: journal.request(number))
        clocks = request["clocks"]
        assert clocks and all(c.get("done_at") is not None for c in clocks.values()), clocks
        assert all(c.get("met") is True for c in clocks.values()), clocks
        assert request["next_due_at"] is None

        await anna.goto(f"{base}/inbox/journal")
        await anna.locator("table.journal").wait_for()
        assert number in await anna.locator("table.journal").inner_text()
        assert "новые сверху" in await anna.locator("main").inner_text()
        await shoot(anna, "journal")

        cookies = await anna.context.cookies()
        session = next(c["value"] for c in cookies if c["name"] == "adshub_session")
        async with (
            aiohttp.ClientSession(cookies={"adshub_session": session}) as http,
            http.get(f"{base}/inbox/journal/export?format=xlsx") as response,
        ):
            assert response.status == 200
            book = openpyxl.load_workbook(io.BytesIO(await response.read()))
        sheet = book.active
        rows = list(sheet.iter_rows(values_only=True))
        headers = list(rows[0])
        row = next(r for r in rows[1:] if r[0] == number)
        cell = dict(zip(headers, row, strict=True))
        assert cell["Результат"].startswith("Перекрыт стояк")
        assert cell["Телефон"] == "+79161234567"
        assert cell["Исполнитель"] == "Пётр Сантехник"
        assert cell["Сроки соблюдены"] == "да"
