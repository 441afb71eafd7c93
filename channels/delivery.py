"""Delivery of replies: one outbound queue per channel, retries with backoff on
429/5xx (honouring the remote side's retry_after), permanent failures recorded
on the message for the inbox. A consumer never dies of one failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from datetime import datetime

from pydantic import ValidationError

from adshub.bus import Bus, Delivery
from adshub.contract import Event, Outbound, utcnow
from adshub.errors import PermanentDeliveryError, RetryableDeliveryError
from adshub.metrics import METRICS
from channels.base import Channel, ChannelJournal
from journal.repository import is_transient

log = logging.getLogger("adshub.delivery")
FLUSH_INTERVAL = 0.25


class DeliveryWorker:
    """Consumes a channel's outbound queue and hands each reply to ``channel.send``."""

    def __init__(
        self,
        channel: Channel,
        bus: Bus,
        journal: ChannelJournal,
        retry_window: float = 600.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.channel = channel
        self.bus = bus
        self.journal = journal
        self.retry_window = retry_window
        self.max_backoff = max_backoff
        self._seen: dict[str, float] = {}
        self._unrecorded: list[tuple[Outbound, datetime]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.channel.profile.local_delivery:
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"delivery-records:{self.channel.name}")
            await self.bus.consume_private("outbound", [self.channel.name], self.handle)
        else:
            queue = await self.bus.declare_outbound_queue(self.channel.name)
            await self.bus.consume(queue, self.handle, max_batch=32, max_wait=0.002)

    async def handle(self, deliveries: list[Delivery]) -> None:
        outbounds: list[tuple[Delivery, Outbound]] = []
        for delivery in deliveries:
            try:
                outbounds.append((delivery, Outbound.model_validate_json(delivery.body)))
            except ValidationError as exc:
                log.error("invalid outbound message: %s", exc, extra={"message_id": delivery.message_id})
                METRICS.dead_letters.labels(source=f"outbound.{self.channel.name}").inc()
                await self.bus.dead_letter(
                    delivery, f"invalid outbound message: {exc.errors()[:3]}", source=f"outbound.{self.channel.name}"
                )
        if not outbounds:
            return
        fresh = [(d, o) for d, o in outbounds if o.id not in self._seen]
        for d, o in outbounds:
            if o.id in self._seen:
                METRICS.duplicates.labels(stage="delivery").inc()
                await d.ack()
        try:
            already = (
                await self.journal.delivered_ids([o.id for _, o in fresh])
                if not self.channel.profile.local_delivery
                else set()
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("journal unavailable for delivery check (%s); requeueing", exc)
            await asyncio.sleep(1.0)
            for d, _ in fresh:
                await d.nack(requeue=True)
            return
        by_address: dict[str, list[tuple[Delivery, Outbound]]] = defaultdict(list)
        for d, o in fresh:
            if o.id in already:
                METRICS.duplicates.labels(stage="delivery").inc()
                await d.ack()
                continue
            by_address[o.address].append((d, o))
        results = await asyncio.gather(*(self._deliver_in_order(items) for items in by_address.values()))
        outcomes = [item for group in results for item in group]
        await self._record(outcomes)

    async def _deliver_in_order(
        self, items: list[tuple[Delivery, Outbound]]
    ) -> list[tuple[Delivery, Outbound, str, str | None]]:
        done: list[tuple[Delivery, Outbound, str, str | None]] = []
        for index, (delivery, outbound) in enumerate(items):
            status, error = await self._deliver(outbound)
            done.append((delivery, outbound, status, error))
            if status == "retry":
                for later_delivery, later in items[index + 1 :]:
                    done.append((later_delivery, later, "retry", "an earlier message is still waiting"))
                break
        return done

    async def _deliver(self, outbound: Outbound) -> tuple[str, str | None]:
        """``sent``, ``queued``, ``failed`` (permanent, with the reason) or ``retry`` (return to the queue)."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self.channel.send(outbound)
                return result, None
            except PermanentDeliveryError as exc:
                METRICS.delivery_failures.labels(channel=self.channel.name, kind="permanent").inc()
                log.warning("delivery failed permanently: %s", exc, extra={"message_id": outbound.id})
                return "failed", str(exc)
            except RetryableDeliveryError as exc:
                METRICS.delivery_failures.labels(channel=self.channel.name, kind="retryable").inc()
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                reason = str(exc)
            except Exception as exc:
                METRICS.delivery_failures.labels(channel=self.channel.name, kind="error").inc()
                log.exception("unexpected delivery error", extra={"message_id": outbound.id})
                if attempt >= 3:
                    return "failed", f"{type(exc).__name__}: {exc}"
                delay = self._backoff(attempt)
                reason = str(exc)
            if time.monotonic() - started + delay > self.retry_window:
                log.warning(
                    "delivery still failing after %.0fs (%s); back to the queue",
                    time.monotonic() - started,
                    reason,
                    extra={"message_id": outbound.id},
                )
                return "retry", reason
            log.info(
                "delivery attempt %d failed (%s); next in %.1fs",
                attempt,
                reason,
                delay,
                extra={"message_id": outbound.id},
            )
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff, 0.5 * 2 ** min(attempt, 8)) * (0.8 + random.random() * 0.4)

    async def stop(self) -> None:
        """Write down what was delivered but not yet recorded."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._flush()

    async def _flush_loop(self) -> None:
        """Local deliveries (pushes to this process's sockets) are recorded together, a few times a second:
        one write per batch instead of one per reply. Replies to a socket are deduplicated by id anyway."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self._flush()
            except Exception as exc:
                log.warning("delivery records not written yet (%s); will retry", exc)

    async def _flush(self) -> None:
        if not self._unrecorded:
            return
        batch, self._unrecorded = self._unrecorded, []
        try:
            await self._mark_sent([o for o, _ in batch], max(at for _, at in batch))
        except Exception:
            self._unrecorded = batch + self._unrecorded
            raise

    async def _mark_sent(self, sent: list[Outbound], at: datetime) -> None:
        await self.journal.record_deliveries(sent, "sent", at)

    async def _record(self, outcomes: list[tuple[Delivery, Outbound, str, str | None]]) -> None:
        sent = [o for _, o, status, _ in outcomes if status == "sent"]
        failed = [(o, e) for _, o, status, e in outcomes if status == "failed"]
        now = utcnow()
        if self.channel.profile.local_delivery:
            self._unrecorded.extend((o, now) for o in sent)
            sent = []
        for _ in range(10):
            try:
                if sent:
                    await self._mark_sent(sent, now)
                for outbound, error in failed:
                    await self.journal.record_deliveries([outbound], "failed", now, error)
                break
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("could not record delivery results")
                    break
                await asyncio.sleep(1.0)
        conversations: set[str] = set()
        failures = 0
        for delivery, outbound, status, _error in outcomes:
            if status == "retry":
                await delivery.nack(requeue=True)
                continue
            if status in ("sent", "failed"):
                METRICS.messages_out.labels(channel=self.channel.name, status=status).inc()
                self._remember(outbound.id)
                failures += status == "failed"
                if outbound.conversation_id:
                    conversations.add(outbound.conversation_id)
            await delivery.ack()
        if conversations or failures:
            await self.bus.publish_event(
                Event(
                    type="delivery",
                    data={"channel": self.channel.name, "conversations": sorted(conversations), "failed": failures},
                )
            )

    def _remember(self, outbound_id: str) -> None:
        self._seen[outbound_id] = time.monotonic()
        if len(self._seen) > 20_000:
            for key in list(self._seen)[:5_000]:
                del self._seen[key]
