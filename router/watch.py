"""The clock watcher: warns before a regulatory clock runs out and records a breach.

``clock_alerts`` is pure; ``ClockWatcher`` polls the journal for requests whose
earliest open clock is near, and for callback tasks and unreviewed messages.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adshub.contract import Event, utcnow
from adshub.metrics import METRICS
from journal.repository import is_transient, next_due

log = logging.getLogger("adshub.watch")


@dataclass(frozen=True)
class Alert:
    clock: str
    kind: str
    """``warning`` before the due time, ``breach`` once it has passed."""
    due_at: datetime


def clock_alerts(clocks: dict[str, dict[str, Any]], now: datetime, warn_before: timedelta) -> list[Alert]:
    """Which clocks need a warning now and which have just been breached."""
    alerts: list[Alert] = []
    for name, clock in clocks.items():
        due = clock.get("due_at")
        if due is None or clock.get("done_at") is not None:
            continue
        if now >= due and clock.get("breached_at") is None:
            alerts.append(Alert(name, "breach", due))
        elif due - warn_before <= now < due and clock.get("warned_at") is None:
            alerts.append(Alert(name, "warning", due))
    return alerts


class ClockWatcher:
    def __init__(self, journal: Any, bus: Any, warn_before: timedelta, interval: float = 10.0) -> None:
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
        cursor = self.journal.requests.find(
            {"next_due_at": {"$ne": None, "$lte": horizon}}, {"clocks": 1, "conversation_id": 1}
        ).limit(500)
        docs = [doc async for doc in cursor]
        informed = await self.journal.inform_times(
            [d["_id"] for d in docs if ((d.get("clocks") or {}).get("inform") or {}).get("done_at") is None]
        )
        for doc in docs:
            clocks = doc.get("clocks") or {}
            if doc["_id"] in informed and "inform" in clocks:
                at = informed[doc["_id"]]
                clocks["inform"].update(done_at=at, met=at <= clocks["inform"]["due_at"], by="hub")
            alerts = clock_alerts(clocks, now, self.warn_before)
            updates: dict[str, Any] = {}
            if doc["_id"] in informed and "inform" in clocks:
                updates["clocks.inform"] = clocks["inform"]
            for alert in alerts:
                field = "breached_at" if alert.kind == "breach" else "warned_at"
                clocks[alert.clock][field] = now
                updates[f"clocks.{alert.clock}.{field}"] = now
                if alert.kind == "breach":
                    clocks[alert.clock]["met"] = False
                    updates[f"clocks.{alert.clock}.met"] = False
                    METRICS.clock_breaches.labels(clock=alert.clock).inc()
                else:
                    METRICS.clock_warnings.labels(clock=alert.clock).inc()
                events.append(
                    Event(
                        type=f"clock.{alert.kind}",
                        request_number=doc["_id"],
                        conversation_id=doc.get("conversation_id"),
                        data={"clock": alert.clock, "due_at": alert.due_at.isoformat()},
                    )
                )
            updates["next_due_at"] = next_due(clocks, self.warn_before)
            await self.journal.requests.update_one({"_id": doc["_id"]}, {"$set": updates})
        events.extend(await self._tasks(now))
        if events:
            await self.bus.publish_events(events)
        return events

    async def _tasks(self, now: datetime) -> list[Event]:
        events: list[Event] = []
        horizon = now + self.warn_before
        cursor = self.journal.tasks.find({"status": "open", "due_at": {"$lte": horizon}, "alerted": {"$ne": "breach"}})
        async for task in cursor:
            kind = "breach" if now >= task["due_at"] else "warning"
            if task.get("alerted") == kind:
                continue
            update: dict[str, Any] = {"alerted": kind}
            if kind == "breach":
                update["met"] = False
                METRICS.clock_breaches.labels(clock="callback").inc()
            await self.journal.tasks.update_one({"_id": task["_id"]}, {"$set": update})
            events.append(
                Event(
                    type=f"clock.{kind}",
                    conversation_id=task.get("conversation_id"),
                    data={"clock": "callback", "task": task["_id"], "due_at": task["due_at"].isoformat()},
                )
            )
        return events
