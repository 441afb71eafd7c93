"""A resident in a real browser: the chat widget on the demo page."""

from __future__ import annotations

import re

import pytest

from app.runtime import Hub
from tests.browser import chromium

pytestmark = pytest.mark.browser


async def test_resident_sees_number_and_deadline_in_the_widget(hub: Hub) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        await page.goto(f"http://127.0.0.1:{hub.port}/chat")
        status = page.locator(".adshub-status")
        await status.filter(has_text="На связи").wait_for(timeout=10_000)
        box = page.locator(".adshub-input")
        await box.fill("В подвале прорвало трубу горячей воды")
        await box.press("Enter")
        badge = page.locator(".adshub-request")
        await badge.wait_for(timeout=5_000)
        text = await badge.inner_text()
        assert re.search(r"Заявка № \d{4}-\d{6} · срок до \d\d\.\d\d\.\d{4}", text), text
        reply = page.locator(".adshub-msg.hub").first
        assert "зарегистрирована" in await reply.inner_text()

        session = await page.evaluate("window.adshubChat.session")
        await page.reload()
        await page.locator(".adshub-request").wait_for(timeout=10_000)
        assert await page.evaluate("window.adshubChat.session") == session
        assert await page.locator(".adshub-msg.resident").count() == 1
        assert not [e for e in errors if "Content Security Policy" in e], errors
