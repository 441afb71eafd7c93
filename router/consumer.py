"""The router's bus side: batches from the inbound queue in, acks out, and what to do when recording fails.

A batch is recorded first; what remains (replies, events, acks) is the batch's
finishing step, which the consumer runs while the next batch is recorded.
Replies are confirmed by the broker before the messages are acked: a crash in
between means redelivery, and a redelivered message that was recorded only has
its replies sent again. Transient failures go back to the queue after a
backoff; a message that can never be recorded is dead-lettered with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from pydantic import ValidationError

from adshub.bus import Bus, Delivery, Finish
from adshub.contract import Inbound
from adshub.metrics import METRICS
from journal.repository import is_transient
from router.effects import Outcome

log = logging.getLogger("adshub.router")

Process = Callable[[Sequence[Inbound], set[str]], Awaitable[Outcome]]


class InboundConsumer:
    """Takes inbound batches off the bus and hands their messages to ``process``."""

    def __init__(self, bus: Bus, process: Process) -> None:
        self.bus = bus
        self.process = process
        self._transient_failures = 0

    async def handle(self, deliveries: list[Delivery]) -> Finish | None:
        """Record the batch; return its finishing step. Messages that cannot be recorded are settled here."""
        work: list[tuple[Delivery, Inbound]] = []
        for delivery in deliveries:
            try:
                work.append((delivery, Inbound.model_validate_json(delivery.body)))
            except ValidationError as exc:
                await self.dead_letter(delivery, f"invalid inbound message: {summary(exc)}")
        if not work:
            return None
        first: dict[str, tuple[Delivery, Inbound]] = {}
        duplicates: list[Delivery] = []
        for delivery, inbound in work:
            if inbound.id in first:
                duplicates.append(delivery)
            else:
                first[inbound.id] = (delivery, inbound)
        if duplicates:
            METRICS.duplicates.labels(stage="router").inc(len(duplicates))
        redelivered = {inb.id for d, inb in first.values() if d.redelivered}
        try:
            outcome = await self.process([inb for _, inb in first.values()], redelivered)
        except Exception as exc:
            await self._not_recorded(exc, first, duplicates)
            return None
        recorded = [d for d, _ in first.values()] + duplicates

        async def finish() -> None:
            await self._finish(outcome, recorded)

        return finish

    async def _not_recorded(
        self, exc: Exception, first: dict[str, tuple[Delivery, Inbound]], duplicates: list[Delivery]
    ) -> None:
        if is_transient(exc):
            await self._back_off(exc, [d for d, _ in first.values()] + duplicates)
            return
        if len(first) == 1:
            ((delivery, inbound),) = first.values()
            log.exception("cannot process message", extra={"message_id": inbound.id})
            await self.dead_letter(delivery, f"{type(exc).__name__}: {exc}")
        else:
            log.warning("batch of %d failed (%s); processing one by one", len(first), exc)
            for delivery, _ in first.values():
                finish = await self.handle([delivery])
                if finish is not None:
                    await finish()
        for d in duplicates:
            await d.ack()

    async def _finish(self, outcome: Outcome, recorded: list[Delivery]) -> None:
        try:
            await self.bus.publish_outbounds(outcome.outbounds)
        except Exception as exc:
            await self._back_off(exc, recorded)
            return
        await self.bus.publish_events(outcome.events)
        self._transient_failures = 0
        await asyncio.gather(*(d.ack() for d in recorded))

    async def _back_off(self, exc: BaseException, deliveries: Sequence[Delivery]) -> None:
        """Wait, then return the messages to the queue: no hot loop, no dead-lettering of transient errors."""
        self._transient_failures += 1
        delay = min(0.25 * 2 ** min(self._transient_failures, 6), 10.0) * (0.75 + random.random() / 2)
        log.warning(
            "transient failure (%s: %s); retrying %d message(s) in %.1fs",
            type(exc).__name__,
            exc,
            len(deliveries),
            delay,
        )
        METRICS.transient_retries.inc(len(deliveries))
        await asyncio.sleep(delay)
        for delivery in deliveries:
            await delivery.nack(requeue=True)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        log.error("dead-lettering message: %s", reason, extra={"message_id": delivery.message_id})
        METRICS.dead_letters.labels(source="inbound").inc()
        await self.bus.dead_letter(delivery, reason, source=self.bus.topology.inbound_exchange)


def summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        loc = ".".join(str(p) for p in error["loc"]) or "message"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)
