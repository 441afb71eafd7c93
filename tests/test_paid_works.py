"""Paid works: a price list, the agreed price told to the resident, the act of completed works with the
works, materials and total, the journal's export and the managers' report."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from domain.paid import amount, priced, rubles, total
from journal.users import Users
from tests.helpers import Dispatcher, cleanup_topology, make_settings, register_from_chat, visible_text


def test_prices_are_counted_in_kopecks_and_written_the_russian_way() -> None:
    items = priced(
        [
            ({"name": "Замена смесителя", "unit": "шт", "price": "1500"}, "1"),
            ({"name": "Труба", "unit": "м", "price": "333,33"}, "1,5"),
            ({"name": "Лишнее", "price": "10"}, ""),
        ]
    )
    assert [i.sum for i in items] == [Decimal("1500.00"), Decimal("500.00")]
    assert total(items) == Decimal("2000.00") and rubles(total(items)) == "2\u00a0000,00\u00a0₽"
    assert rubles("1250.5") == "1\u00a0250,50\u00a0₽"
    for bad in ("-1", "много", "1e9"):
        with pytest.raises(ValueError):
            amount(bad)


@pytest.fixture
async def paid_hub(database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path) -> AsyncIterator[Hub]:
    settings: Settings = make_settings(database, rabbitmq, unique, tmp_path)
    hub = Hub(settings, ["router", "webchat", "inbox"])
    await hub.start()
    assert hub.journal is not None
    await Users(hub.journal).add("olga", "manager-pass-1", "manager", "Ольга Управляющая")
    await hub.journal.staff.insert_one({"_id": "handy", "name": "Мастеров Иван", "trade": "handyman", "active": True})
    yield hub
    await hub.stop()
    await cleanup_topology(settings)


async def test_a_paid_request_from_price_to_act_export_and_report(paid_hub: Hub) -> None:
    chat, number = await register_from_chat(
        paid_hub, "paid-resident-1", "Хочу платно заменить смеситель на кухне, ул. Лесная 4 кв 3"
    )
    manager = Dispatcher(f"http://127.0.0.1:{paid_hub.port}")
    try:
        assert (await manager.login("olga", "manager-pass-1"))[0] == 200
        for name, unit, price in (("Замена смесителя", "шт", "1500"), ("Замена гибкой подводки", "шт", "875,50")):
            status, _ = await manager.post("/inbox/prices", {"name": name, "unit": unit, "price": price})
            assert status == 200
        assert (await manager.post("/inbox/prices", {"name": "Без цены", "price": "дорого"}))[0] == 400
        _, card = await manager.get(f"/inbox/r/{number}")
        fields = re.findall(r'name="(qty:[0-9a-f]+)"', card)  # the price list in name order: подводка, смеситель
        assert len(fields) == 2
        status, _ = await manager.post(f"/inbox/r/{number}/price", {fields[0]: "2", fields[1]: "1"})
        assert status == 200
        told = await chat.frames_until(lambda fs: any("Итого" in str(f.get("text")) for f in fs))
        price_text = next(f["text"] for f in told if "Итого" in str(f.get("text")))
        assert "Итого: 3\u00a0251,00\u00a0₽" in price_text and "Замена гибкой подводки — 2 шт" in price_text

        assert (await manager.post(f"/inbox/r/{number}/assign", {"staff": "handy"}))[0] == 200
        status, page = await manager.post(
            f"/inbox/r/{number}/status",
            {"status": "done", "result": "Заменён смеситель и подводка", "materials": "подводка 60 см — 2 шт"},
        )
        assert status == 200, visible_text(page)[:500]
        _, act = await manager.get(f"/inbox/r/{number}/act")
        act_text = visible_text(act)
        assert "Акт выполненных работ" in act_text and "Заменён смеситель и подводка" in act_text
        assert (
            "подводка 60 см — 2 шт" in act_text and "3\u00a0251,00\u00a0₽" in act_text and "Мастеров Иван" in act_text
        )

        async with manager.http.get(manager.base + "/inbox/journal/export?format=csv") as response:
            exported = (await response.read()).decode("utf-8-sig")
        assert "Стоимость платных работ" in exported.splitlines()[0] and "3251.0" in exported

        _, report = await manager.get("/inbox/reports")
        report_text = visible_text(report)
        assert "Мастеров Иван" in report_text and "Закрыто с фотоотчётом: 0 из 1" in report_text
        assert "платные работы: 3\u00a0251,00\u00a0₽" in report_text
    finally:
        await manager.close()
        await chat.ws.close()
        await chat.http.close()  # type: ignore[attr-defined]
