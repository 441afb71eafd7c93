"""A field crew in real browsers, for a burst hot-water pipe: two dispatchers book the same plumber's
slot from the request card at once (one gets it, the other a clear refusal), the resident hears who
comes, when and why; the plumber, on a 390 px phone opened by his personal link, accepts while offline
(the press goes when the network returns, once), drives, arrives, localizes, uploads a photo through the
page's file input, enters the materials and closes; the resident gets the closing message and the
survey, and every clock of the request is met and closed. Screenshots of the card, the calendar and the
crew app at 1280 and 390 px go to the artifacts."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from journal.users import Users
from tests.browser import chromium
from tests.helpers import cleanup_topology, make_settings, register_from_chat, wait_for
from tests.test_browser_night import WIDTHS, shoot, signed_in

pytestmark = pytest.mark.browser

PLUMBER = "Сантехников Пётр Иванович"


def png(path: Path) -> Path:
    """A real 8×8 PNG, as a phone's camera would hand the page a file."""
    raw = b"".join(b"\x00" + b"\x20\x80\xc0" * 8 for _ in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
async def crew_hub(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path) -> AsyncIterator[Hub]:
    settings: Settings = make_settings(database, rabbitmq, unique, tmp_path)
    hub = Hub(settings, ["router", "webchat", "inbox"])
    await hub.start()
    assert hub.journal is not None
    users = Users(hub.journal)
    await users.add("anna", "crew-pass-1", "admin", "Анна Старшая")
    await users.add("boris", "crew-pass-2", "dispatcher", "Борис Дежурный")
    every_hour = {str(d): [["00:00", "23:59"]] for d in range(7)}
    await hub.journal.staff.insert_many(
        [
            {
                "_id": "plumber",
                "name": PLUMBER,
                "trade": "plumber",
                "phone": "+79000000001",
                "active": True,
                "hours": every_hour,
            },
            {
                "_id": "lift",
                "name": "Лифтов Олег",
                "trade": "lift",
                "phone": "+79000000002",
                "active": True,
                "hours": every_hour,
            },
        ]
    )
    yield hub
    await hub.stop()
    await cleanup_topology(settings)


async def test_booking_a_plumber_and_closing_from_his_phone(crew_hub: Hub, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{crew_hub.port}"
    journal = crew_hub.journal
    assert journal is not None
    chat, number = await register_from_chat(
        crew_hub, "crew-resident", "Течёт труба горячей воды под раковиной, ул. Лесная 4, кв. 12, тел. 8 916 123-45-67"
    )
    try:
        async with chromium() as browser:
            anna = await signed_in(browser, base, "anna", "crew-pass-1")
            boris = await signed_in(browser, base, "boris", "crew-pass-2")
            for page in (anna, boris):
                await page.goto(f"{base}/inbox/r/{number}")
                await page.locator(".offers .who").filter(has_text=PLUMBER).wait_for()
            assert await anna.locator(".offers .who").filter(has_text="Лифтов").count() == 0
            await shoot(anna, "crew-card-offers")

            first_slot = ".offers li:has(.who:text('" + PLUMBER + "')) button.slot >> nth=0"
            slot_text = await anna.locator(first_slot).inner_text()
            assert slot_text == await boris.locator(first_slot).inner_text()
            await asyncio.gather(anna.click(first_slot), boris.click(first_slot))
            for page in (anna, boris):
                await page.wait_for_load_state()
                await page.locator(".booking, .form-error").first.wait_for()

            async def outcome(page: object) -> str:
                if await page.locator(".form-error").count():  # type: ignore[attr-defined]
                    return str(await page.locator(".form-error").inner_text())  # type: ignore[attr-defined]
                return "booked" if await page.locator(".booking").filter(has_text="Записан(а)").count() else "?"  # type: ignore[attr-defined]

            outcomes = sorted([await outcome(anna), await outcome(boris)])
            assert outcomes[0] == "booked", outcomes
            assert "уже занято" in outcomes[1] and PLUMBER in outcomes[1], outcomes
            assert await journal.bookings.count_documents({"request_number": number, "status": "booked"}) == 1
            assert await journal.booking_cells.count_documents({"staff_id": "plumber"}) == 4

            visit = await chat.receive_type("message")
            assert f"Сотрудник {PLUMBER} придёт" in visit["text"] and "Авария на системе ХВС/ГВС" in visit["text"]
            request = await journal.requests.find_one({"_id": number})
            assert (
                request is not None
                and request["executor"]["id"] == "plumber"
                and request["visit"]["employee"] == PLUMBER
            )

            booked = await journal.bookings.find_one({"request_number": number, "status": "booked"})
            assert booked is not None
            day = booked["start"].astimezone(crew_hub.settings.zone).date().isoformat()
            await anna.goto(f"{base}/inbox/calendar?trade=plumber&day={day}")
            await anna.locator("table.calendar a.booked").filter(has_text=number).wait_for()
            await shoot(anna, "crew-calendar")

            await anna.goto(f"{base}/inbox/staff")
            await anna.locator("tr", has_text=PLUMBER).get_by_role("button", name="Ссылка для телефона").click()
            link = await anna.locator("input.crew-link").first.input_value()
            assert link.startswith(f"{base}/crew/")

            w, h = WIDTHS["phone"]
            phone_context = await browser.new_context(
                viewport={"width": w, "height": h}, is_mobile=True, has_touch=True
            )
            phone = await phone_context.new_page()
            await phone.goto(link)
            job = phone.locator(f"#job-{number}")
            await job.wait_for()
            assert "Лесная" in await job.locator(".address").inner_text()
            assert "+79161234567" in (await job.locator("a.call").get_attribute("href") or "")
            await shoot(phone, "crew-app")

            await phone_context.set_offline(True)
            await job.get_by_role("button", name="Принял").click()
            await phone.locator("#net-state").filter(has_text="Нет связи").wait_for()
            await phone_context.set_offline(False)
            await phone.evaluate("window.dispatchEvent(new Event('online'))")
            await job.locator("button.done", has_text="Принял").wait_for(timeout=10_000)
            for step in ("Выехал", "На месте", "Локализовано"):
                await job.get_by_role("button", name=step).click()
                await job.locator("button.done", has_text=step).wait_for(timeout=10_000)
            await job.locator("textarea[name=result]").fill("Заменён участок трубы, течь устранена")
            await job.locator("textarea[name=materials]").fill("труба PPR 20 мм — 0,5 м; муфта — 2 шт")
            await job.locator("input[type=file][name=photos]").set_input_files(str(png(tmp_path / "result.png")))
            await job.get_by_role("button", name="Выполнено — закрыть заявку").click()
            await phone.locator(".empty").filter(has_text="заявок нет").wait_for(timeout=10_000)

            closed = await wait_for(
                lambda: journal.requests.find_one({"_id": number, "status": "done", "next_due_at": None}),
                what="closed, clocks stopped",
            )
            assert (
                closed["result"]["materials"] == "труба PPR 20 мм — 0,5 м; муфта — 2 шт"
                and len(closed["result"]["photos"]) == 1
            )
            assert set(closed["crew"]) == {"accepted", "on_way", "on_site", "localized", "done"}
            clocks = closed["clocks"]
            assert clocks and all(c.get("done_at") and c.get("met") is True for c in clocks.values()), clocks
            assert closed.get("next_due_at") is None
            stored = await journal.read_file(closed["result"]["photos"][0])
            assert stored is not None and stored[0].startswith(b"\x89PNG")
            assert await journal.crew_actions.count_documents({"request": number, "step": "accepted"}) == 1

            texts = [
                m["text"] for m in await chat.frames_until(lambda fs: any("Оцените" in str(f.get("text")) for f in fs))
            ]
            assert any("выполнена: Заменён участок трубы" in t and "Оцените" in t for t in texts), texts

            await anna.goto(f"{base}/inbox/r/{number}")
            await anna.locator(".result").filter(has_text="Заменён участок трубы").wait_for()
            assert await anna.locator("img.photo").count() == 1
            card_text = await anna.locator("body").inner_text()
            assert f"{PLUMBER} (исполнитель)" in card_text and "с телефона исполнителя" in card_text
            await shoot(anna, "crew-card-closed")

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{link}/calendar.ics") as response:
                    assert response.status == 200 and response.content_type == "text/calendar"
                    feed = await response.text()
                assert f"Заявка № {number}" in feed.replace("\r\n ", "") and "BEGIN:VEVENT" in feed
                async with http.get(f"{base}/crew/not-a-real-link") as response:
                    assert response.status == 404
    finally:
        await chat.ws.close()
        await chat.http.close()  # type: ignore[attr-defined]
