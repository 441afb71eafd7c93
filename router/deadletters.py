"""Records what the dead-letter queue receives, so that dispatchers see it in the inbox."""

from __future__ import annotations

import asyncio
import logging

from adshub.bus import Bus, Delivery
from adshub.contract import Event
from journal.repository import Journal, is_transient

log = logging.getLogger("adshub.deadletters")


class DeadLetterRecorder:
    def __init__(self, journal: Journal, bus: Bus) -> None:
        self.journal = journal
        self.bus = bus

    async def start(self) -> None:
        await self.bus.consume(self.bus.topology.dead_queue, self.handle, max_batch=20, prefetch=20)

    async def handle(self, deliveries: list[Delivery]) -> None:
        events = []
        for delivery in deliveries:
            reason = str(delivery.headers.get("x-reason") or _death_reason(delivery.headers))
            source = str(delivery.headers.get("x-source") or "unknown")
            try:
                await self.journal.record_dead_letter(
                    delivery.message_id, reason, source, delivery.body, delivery.headers
                )
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("cannot record dead letter", extra={"message_id": delivery.message_id})
                await asyncio.sleep(2.0)
                await delivery.nack(requeue=True)
                continue
            events.append(
                Event(
                    type="dead_letter", message_id=delivery.message_id, data={"reason": reason[:500], "source": source}
                )
            )
            await delivery.ack()
        await self.bus.publish_events(events)


def _death_reason(headers: dict[str, object]) -> str:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return f"rejected by {deaths[0].get('queue')}: {deaths[0].get('reason')}"
    return "no reason given"
