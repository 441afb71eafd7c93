"""What operators and the inspection see: /metrics, structured logs, and the clock watcher's warnings and breaches."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import aiohttp

from adshub.bus import RabbitBus
from adshub.contract import Outbound
from adshub.logs import JsonFormatter
from app.runtime import Hub
from domain.clocks import clock_alerts
from domain.deadlines import DeadlinePolicy
from journal.documents import clocks_doc
from journal.repository import Journal
from router.watch import ClockWatcher
from tests.helpers import connect_chat


async def test_metrics_cover_channels_latency_queues_failures_and_breaches(
    hub: Hub, http: aiohttp.ClientSession
) -> None:
    chat = await connect_chat(http, hub.port or 0, "metrics-session-1")
    await chat.send("m1", "Пахнет газом на лестнице, Мира 3")
    await chat.receive_type("message")
    async with http.get(f"http://127.0.0.1:{hub.port}/metrics") as response:
        text = await response.text()
    assert 'adshub_messages_in_total{channel="webchat"}' in text
    assert 'adshub_messages_out_total{channel="webchat",status="sent"}' in text
    assert "adshub_registration_latency_seconds_bucket" in text
    assert f'adshub_queue_depth{{queue="{hub.settings.bus_prefix}.inbound.0"}}' in text
    for family in ("adshub_delivery_failures_total", "adshub_clock_breaches_total", "adshub_dead_letters_total"):
        assert f"# TYPE {family} counter" in text


def test_json_logs_carry_the_request_number_and_message_id() -> None:
    record = logging.LogRecord(
        "adshub.router", logging.INFO, __file__, 1, "registered request %s", ("2026-000001",), None
    )
    record.message_id = "webchat:s:1"
    record.request_number = "2026-000001"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message_id"] == "webchat:s:1" and entry["request_number"] == "2026-000001"
    assert entry["level"] == "info" and entry["message"] == "registered request 2026-000001"


def test_clock_alerts_are_pure() -> None:
    now = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    clocks = clocks_doc("water_accident", now - timedelta(minutes=27), now - timedelta(minutes=27), DeadlinePolicy())
    alerts = {(a.clock, a.kind) for a in clock_alerts(clocks, now, timedelta(minutes=5))}
    assert ("inform", "warning") in alerts and ("localize", "warning") in alerts and ("review", "breach") in alerts


async def test_watcher_warns_records_breaches_and_reads_informing_from_deliveries(
    journal: Journal, bus: RabbitBus
) -> None:
    now = datetime.now(UTC)
    registered = now - timedelta(minutes=27)
    for number in ("2026-000001", "2026-000002"):
        clocks = clocks_doc("water_accident", registered, registered, DeadlinePolicy())
        await journal.requests.insert_one(
            {
                "_id": number,
                "source_message_id": number,
                "registered_at": registered,
                "clocks": clocks,
                "next_due_at": registered + timedelta(minutes=10),
            }
        )
    await journal.record_deliveries(
        [Outbound(id="out-1", channel="webchat", address="s", text="x", request_number="2026-000002")],
        "sent",
        registered + timedelta(seconds=1),
    )
    watcher = ClockWatcher(journal, bus, warn_before=timedelta(minutes=5))
    events = await watcher.tick(now)
    kinds = {(e.request_number, e.data["clock"], e.type) for e in events}
    assert ("2026-000001", "inform", "clock.warning") in kinds
    assert ("2026-000002", "inform", "clock.warning") not in kinds
    assert ("2026-000001", "review", "clock.breach") in kinds
    first = await journal.request("2026-000001")
    assert first["clocks"]["review"]["met"] is False and first["clocks"]["review"]["breached_at"]
    second = await journal.request("2026-000002")
    assert second["clocks"]["inform"]["met"] is True and second["clocks"]["inform"]["by"] == "hub"
    again = await watcher.tick(now + timedelta(seconds=30))
    assert not [e for e in again if e.request_number == "2026-000001" and e.data["clock"] == "inform"]
