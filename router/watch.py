"""The clock watcher: warns before a regulatory clock runs out and records a breach.

What to alert is decided by ``domain.clocks.clock_alerts``; the watcher polls the
journal for requests whose earliest open clock is near, and for callback tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from adshub.bus import Bus
from adshub.contract import Event, Outbound, utcnow
from adshub.metrics import METRICS
from bots.texts import Texts
from domain.categories import CATEGORIES, Category
from domain.clocks import clock_alerts, next_due
from domain.deadlines import CLOCK_LABELS
from journal.documents import ClockDoc
from journal.repository import ClockRecord, Journal, is_transient

log = logging.getLogger("adshub.watch")


ON_SHIFT = timedelta(seconds=90)
"""A dispatcher whose inbox listened within this long is on shift."""


class ClockWatcher:
    def __init__(
        self,
        journal: Journal,
        bus: Bus,
        warn_before: timedelta,
        interval: float = 10.0,
        managers: Sequence[tuple[str, str]] = (),
        texts: Texts | None = None,
    ) -> None:
        self.journal = journal
        self.bus = bus
        self.warn_before = warn_before
        self.interval = interval
        self.managers = list(managers)
        self.texts = texts
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
        records: list[ClockRecord] = []
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
            records.append(
                ClockRecord(doc["_id"], alerts, now, next_due(clocks, self.warn_before), cast(ClockDoc | None, inform))
            )
        await self.journal.record_clock_alerts(records)
        events.extend(await self._tasks(now))
        if events:
            await self.bus.publish_events(events)
        breaches = [e for e in events if e.type == "clock.breach"]
        if breaches and self.managers and not await self.journal.anyone_present(now - ON_SHIFT):
            await self._tell_managers(breaches)
        return events

    async def _tell_managers(self, breaches: list[Event]) -> None:
        """A clock broke and nobody has the inbox open: the managers hear of it on their channels."""
        numbers = [e.request_number for e in breaches if e.request_number]
        requests = await self.journal.requests_by_number(numbers)
        for event in breaches:
            clock = str(event.data.get("clock"))
            request = requests.get(event.request_number or "")
            text = breach_text(clock, request, event, self.texts)
            for channel, address in self.managers:
                outbound = Outbound(
                    id=f"alert:{event.request_number or event.data.get('task')}:{clock}:{channel}:{address}"[:600],
                    channel=channel,
                    address=address,
                    text=text,
                    kind="notice",
                    request_number=event.request_number,
                    author="hub",
                    subject=f"Нарушен срок: заявка № {event.request_number}"
                    if event.request_number
                    else "Нарушен срок",
                )
                try:
                    await self.bus.publish_outbound(outbound)
                except Exception as exc:
                    log.warning("manager alert to %s not sent: %s", channel, exc)
                else:
                    METRICS.manager_alerts.labels(channel=channel).inc()

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


def breach_text(clock: str, request: Mapping[str, Any] | None, event: Event, texts: Texts | None) -> str:
    """What a manager reads: which clock of which request broke, and that nobody is at the inbox."""
    label = CLOCK_LABELS.get(clock, clock)
    if request is None:
        return f"Нарушен срок «{label}», а в рабочем месте диспетчера сейчас никого нет."
    category = CATEGORIES[Category(request["category"])].name
    address = (request.get("address") or {}).get("text") or "адрес не указан"
    due = str(event.data.get("due_at") or "")
    when = texts.local(due) if texts and due else due
    return (
        f"Нарушен срок «{label}» (до {when}) по заявке № {request['_id']}: {category}, {address}. "
        "В рабочем месте диспетчера сейчас никого нет."
    )
