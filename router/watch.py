"""The clock watcher: warns before a regulatory clock runs out and records a breach.

What to alert is decided by ``domain.clocks.clock_alerts``; the watcher polls the
journal for requests whose earliest open clock is near, and for callback tasks.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any, cast

from adshub.bus import Bus
from adshub.contract import Event, utcnow
from adshub.metrics import METRICS
from domain.clocks import clock_alerts, next_due
from journal.documents import ClockDoc
from journal.repository import Journal, is_transient

log = logging.getLogger("adshub.watch")


class ClockWatcher:
    def __init__(self, journal: Journal, bus: Bus, warn_before: timedelta, interval: float = 10.0) -> None:
        self.journal = journal
        self.bus = bus
        self.warn_before = warn_before
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="clock-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.tick(utcnow())
            except Exception as exc:
                if is_transient(exc):
                    log.warning("clock watcher: journal unavailable (%s)", exc)
                else:
                    log.exception("clock watcher failed")
            await asyncio.sleep(self.interval)

    async def tick(self, now: datetime) -> list[Event]:
        horizon = now + self.warn_before
        events: list[Event] = []
        docs = await self.journal.requests_due(horizon)
        informed = await self.journal.inform_times(
            [d["_id"] for d in docs if ((d.get("clocks") or {}).get("inform") or {}).get("done_at") is None]
        )
        for doc in docs:
            clocks: dict[str, dict[str, Any]] = {name: dict(c) for name, c in (doc.get("clocks") or {}).items()}
            inform: dict[str, Any] | None = None
            if doc["_id"] in informed and "inform" in clocks:
                at = informed[doc["_id"]]
                inform = clocks["inform"]
                inform.update(done_at=at, met=at <= inform["due_at"], by="hub")
            alerts = clock_alerts(clocks, now, self.warn_before)
            for alert in alerts:
                if alert.kind == "breach":
                    clocks[alert.clock].update(breached_at=now, met=False)
                    METRICS.clock_breaches.labels(clock=alert.clock).inc()
                else:
                    clocks[alert.clock]["warned_at"] = now
                    METRICS.clock_warnings.labels(clock=alert.clock).inc()
                events.append(
                    Event(
                        type=f"clock.{alert.kind}",
                        request_number=doc["_id"],
                        conversation_id=doc.get("conversation_id"),
                        data={"clock": alert.clock, "due_at": alert.due_at.isoformat()},
                    )
                )
            await self.journal.record_clock_alerts(
                doc["_id"], alerts, now, next_due(clocks, self.warn_before), informed=cast(ClockDoc | None, inform)
            )
        events.extend(await self._tasks(now))
        if events:
            await self.bus.publish_events(events)
        return events

    async def _tasks(self, now: datetime) -> list[Event]:
        events: list[Event] = []
        for task in await self.journal.tasks_due(now + self.warn_before):
            kind = "breach" if now >= task["due_at"] else "warning"
            if task.get("alerted") == kind:
                continue
            if kind == "breach":
                METRICS.clock_breaches.labels(clock="callback").inc()
            await self.journal.mark_task_alerted(task["_id"], kind)
            events.append(
                Event(
                    type=f"clock.{kind}",
                    conversation_id=task.get("conversation_id"),
                    data={"clock": "callback", "task": task["_id"], "due_at": task["due_at"].isoformat()},
                )
            )
        return events
