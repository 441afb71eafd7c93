"""The message bus: RabbitMQ through aio-pika, the whole topology in one place.

Durable exchanges and queues, persistent messages, publisher confirms, manual
acks with a prefetch limit, and a dead-letter queue whose messages carry the
reason they could not be processed. ``connect_robust`` reconnects by itself;
publishing retries until the broker confirms or a deadline passes, so an
adapter acknowledges its source only after the broker has the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from adshub.contract import Event, Inbound, Outbound
from adshub.errors import TransientError
from adshub.settings import Settings

log = logging.getLogger("adshub.bus")

SETTLE_TIMEOUT = 10.0
"""An ack or nack that does not complete in this time is abandoned; the broker redelivers the message."""

PUBLISH_ERRORS = (
    aiormq.exceptions.AMQPError,
    ConnectionError,
    RuntimeError,
    asyncio.TimeoutError,
    OSError,
)


@dataclass(frozen=True)
class Topology:
    """Every exchange and queue name, derived from one prefix (tests use a unique one).

    Inbound messages are spread over ``shards`` queues by their conversation, each queue with a single
    active consumer: any number of routers share the work, and one conversation's messages are always
    handled by one router at a time, in order. ``queue_type`` is ``classic`` or ``quorum`` (replicated;
    compose.yaml uses it)."""

    prefix: str = "adshub"
    shards: int = 4
    queue_type: str = "classic"

    @property
    def inbound_exchange(self) -> str:
        return f"{self.prefix}.inbound"

    @property
    def inbound_queues(self) -> list[str]:
        return [f"{self.prefix}.inbound.{n}" for n in range(self.shards)]

    def shard_of(self, conversation_key: str) -> int:
        return zlib.crc32(conversation_key.encode()) % self.shards

    def inbound_key(self, conversation_key: str) -> str:
        return f"inbound.{self.shard_of(conversation_key)}"

    @property
    def crew_queue(self) -> str:
        """Executors' own messages to the bot (their jobs and buttons), handed on by the router: the
        dispatchers' side answers them, one message at a time in order."""
        return f"{self.prefix}.crew"

    @property
    def outbound_exchange(self) -> str:
        return f"{self.prefix}.outbound"

    def outbound_queue(self, channel: str) -> str:
        return f"{self.prefix}.outbound.{channel}"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    def queue_arguments(self, **extra: Any) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type, **extra}

    def all_queues(self, channels: Sequence[str]) -> list[str]:
        return [*self.inbound_queues, self.crew_queue, self.dead_queue, *(self.outbound_queue(c) for c in channels)]

    def all_exchanges(self) -> list[str]:
        return [self.inbound_exchange, self.outbound_exchange, self.events_exchange, self.dead_exchange]


def topology_of(settings: Settings) -> Topology:
    return Topology(settings.bus_prefix, shards=settings.router_shards, queue_type=settings.queue_type)


@dataclass
class Delivery:
    """One message taken from a queue; the consumer must settle it exactly once."""

    body: bytes
    message_id: str | None
    redelivered: bool
    headers: dict[str, Any]
    routing_key: str | None
    _message: AbstractIncomingMessage = field(repr=False)
    settled: bool = False

    async def ack(self) -> None:
        await self._settle(self._message.ack)

    async def nack(self, requeue: bool = True) -> None:
        await self._settle(lambda: self._message.nack(requeue=requeue))

    async def _settle(self, action: Callable[[], Awaitable[None]]) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            await asyncio.wait_for(action(), SETTLE_TIMEOUT)
        except PUBLISH_ERRORS as exc:
            # The channel died under us; the broker will redeliver the message.
            log.warning("settle failed, message will be redelivered: %s", exc, extra={"message_id": self.message_id})


Finish = Callable[[], Awaitable[None]]
"""What is left of a batch once its work is recorded (publishing, settling); see ``Consumer``."""
BatchHandler = Callable[[list[Delivery]], Awaitable[Finish | None]]
_STOP = object()
"""Put in a consumer's queue to end its loop once the messages before it are done."""


class Consumer:
    """Consumes one queue in batches; ``stop`` stops taking messages and lets the ones taken finish.

    With several lanes, batches run concurrently; messages with the same ``x-lane`` header (one
    conversation) always share a lane, so they are still handled one after another, in order.

    A handler may return a ``Finish`` step instead of settling everything itself. The lane then
    runs that step while the handler works on the next batch, and starts the next batch's step
    only when this one is done: a two-stage pipeline that keeps finishing steps in order and at
    most one of them in flight per lane.
    """

    def __init__(
        self,
        queue: AbstractQueue | Sequence[AbstractQueue],
        handler: BatchHandler,
        max_batch: int,
        max_wait: float,
        lanes: int = 1,
    ) -> None:
        self._queues = [queue] if isinstance(queue, AbstractQueue) else list(queue)
        self._handler = handler
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._lanes: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in range(max(1, lanes))]
        self._tags: list[tuple[AbstractQueue, str]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for queue in self._queues:
            self._tags.append((queue, await queue.consume(self._take, no_ack=False)))
        name = self._queues[0].name if len(self._queues) == 1 else f"{len(self._queues)} queues"
        self._tasks = [
            asyncio.create_task(self._run(lane), name=f"consume:{name}:{n}") for n, lane in enumerate(self._lanes)
        ]

    async def _take(self, message: AbstractIncomingMessage) -> None:
        key = (message.headers or {}).get("x-lane")
        lane = zlib.crc32(str(key).encode()) % len(self._lanes) if key is not None else 0
        self._lanes[lane].put_nowait(message)

    async def _run(self, pending: asyncio.Queue[Any]) -> None:
        finishing: asyncio.Task[None] | None = None
        try:
            stopping = False
            while not stopping:
                first = await pending.get()
                if first is _STOP:
                    return
                batch = [first]
                if self._max_wait > 0 and pending.qsize() < self._max_batch - 1:
                    await asyncio.sleep(self._max_wait)
                while len(batch) < self._max_batch and not pending.empty():
                    item = pending.get_nowait()
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)
                deliveries = [_wrap(m) for m in batch]
                finish: Finish | None = None
                try:
                    finish = await self._handler(deliveries)
                except Exception:
                    log.exception("batch handler failed; messages will be redelivered")
                if finishing is not None:
                    await asyncio.shield(finishing)
                    finishing = None
                if finish is not None:
                    finishing = asyncio.create_task(_finish(finish, deliveries))
                else:
                    await _requeue_unsettled(deliveries)
        finally:
            if finishing is not None:
                await asyncio.shield(finishing)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop taking messages and finish those already taken; what the timeout cuts off goes back."""
        for queue, tag in self._tags:
            with contextlib.suppress(*PUBLISH_ERRORS):
                await asyncio.wait_for(queue.cancel(tag), SETTLE_TIMEOUT)
        self._tags = []
        for lane in self._lanes:
            lane.put_nowait(_STOP)
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=drain_timeout)
            for task in pending:
                task.cancel()
        for lane in self._lanes:
            while not lane.empty():
                message = lane.get_nowait()
                if message is _STOP:
                    continue
                with contextlib.suppress(*PUBLISH_ERRORS):
                    await asyncio.wait_for(message.nack(requeue=True), SETTLE_TIMEOUT)


async def _finish(finish: Finish, deliveries: list[Delivery]) -> None:
    try:
        await finish()
    except Exception:
        log.exception("finishing a batch failed; its messages will be redelivered")
    await _requeue_unsettled(deliveries)


async def _requeue_unsettled(deliveries: list[Delivery]) -> None:
    for d in deliveries:
        if not d.settled:
            log.error("handler left a message unsettled; requeueing", extra={"message_id": d.message_id})
            await d.nack(requeue=True)


def _wrap(message: AbstractIncomingMessage) -> Delivery:
    return Delivery(
        body=message.body,
        message_id=message.message_id,
        redelivered=bool(message.redelivered),
        headers=dict(message.headers or {}),
        routing_key=message.routing_key,
        _message=message,
    )


class Bus(Protocol):
    """What the parts of the hub ask of the message bus; ``RabbitBus`` is the one implementation."""

    topology: Topology

    async def publish_inbound(self, inbound: Inbound) -> None: ...

    async def publish_crew(self, inbound: Inbound) -> None: ...

    async def publish_outbound(self, outbound: Outbound) -> None: ...

    async def publish_outbounds(self, outbounds: Sequence[Outbound]) -> None: ...

    async def publish_event(self, event: Event) -> None: ...

    async def publish_events(self, events: Sequence[Event]) -> None: ...

    async def dead_letter(self, delivery: Delivery, reason: str, source: str) -> None: ...

    async def declare_outbound_queue(self, channel_name: str) -> str: ...

    async def consume(
        self,
        queue_name: str,
        handler: BatchHandler,
        *,
        max_batch: int = 1,
        max_wait: float = 0.0,
        prefetch: int | None = None,
        lanes: int = 1,
    ) -> Consumer: ...

    async def consume_inbound(
        self, handler: BatchHandler, *, max_batch: int = 1, max_wait: float = 0.0, lanes: int = 1
    ) -> Consumer: ...

    async def consume_crew(self, handler: BatchHandler) -> Consumer: ...

    async def consume_private(
        self, exchange: str, routing_keys: Sequence[str], handler: BatchHandler, *, max_batch: int = 50
    ) -> Consumer: ...


class RabbitBus:
    """The one bus implementation: RabbitMQ with confirms, durable queues and a dead-letter queue."""

    def __init__(self, url: str, topology: Topology, prefetch: int = 64, publish_timeout: float = 60.0) -> None:
        self.url = url
        self.topology = topology
        self.prefetch = prefetch
        self.publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._consumers: list[Consumer] = []
        self._event_channel: AbstractChannel | None = None
        self._event_exchange: AbstractExchange | None = None

    async def connect(self, attempts: int = 30) -> None:
        for attempt in range(1, attempts + 1):
            try:
                self._connection = await aio_pika.connect_robust(
                    self.url, client_properties={"connection_name": f"adshub:{self.topology.prefix}"}
                )
                break
            except PUBLISH_ERRORS as exc:
                if attempt == attempts:
                    raise TransientError(f"RabbitMQ is unreachable: {exc}") from exc
                log.warning("RabbitMQ not reachable yet (%s), attempt %d", exc, attempt)
                await asyncio.sleep(min(0.5 * attempt, 5))
        assert self._connection is not None
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        await self._declare(self._publish_channel)
        self._event_channel = await self._connection.channel(publisher_confirms=False)
        self._event_exchange = await self._event_channel.get_exchange(self.topology.events_exchange)

    async def _declare(self, channel: AbstractChannel) -> None:
        t = self.topology
        kinds = aio_pika.ExchangeType
        self._exchanges = {
            "inbound": await channel.declare_exchange(t.inbound_exchange, kinds.DIRECT, durable=True),
            "outbound": await channel.declare_exchange(t.outbound_exchange, kinds.DIRECT, durable=True),
            "events": await channel.declare_exchange(t.events_exchange, kinds.TOPIC, durable=True),
            "dead": await channel.declare_exchange(t.dead_exchange, kinds.FANOUT, durable=True),
        }
        dead = await channel.declare_queue(t.dead_queue, durable=True, arguments=t.queue_arguments())
        await dead.bind(self._exchanges["dead"])
        for n, name in enumerate(t.inbound_queues):
            inbound = await channel.declare_queue(
                name,
                durable=True,
                arguments=t.queue_arguments(
                    **{"x-dead-letter-exchange": t.dead_exchange, "x-single-active-consumer": True}
                ),
            )
            await inbound.bind(self._exchanges["inbound"], routing_key=f"inbound.{n}")
        crew = await channel.declare_queue(
            t.crew_queue,
            durable=True,
            arguments=t.queue_arguments(
                **{"x-dead-letter-exchange": t.dead_exchange, "x-single-active-consumer": True}
            ),
        )
        await crew.bind(self._exchanges["inbound"], routing_key="crew")

    async def declare_outbound_queue(self, channel_name: str) -> str:
        assert self._publish_channel is not None
        name = self.topology.outbound_queue(channel_name)
        queue = await self._publish_channel.declare_queue(
            name,
            durable=True,
            arguments=self.topology.queue_arguments(**{"x-dead-letter-exchange": self.topology.dead_exchange}),
        )
        await queue.bind(self._exchanges["outbound"], routing_key=channel_name)
        return name

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        self._consumers.clear()
        if self._connection is not None:
            with contextlib.suppress(*PUBLISH_ERRORS):
                await asyncio.wait_for(self._connection.close(), SETTLE_TIMEOUT)
            self._connection = None

    async def stop_consuming(self, drain_timeout: float = 30.0) -> None:
        await asyncio.gather(*(c.stop(drain_timeout) for c in self._consumers))
        self._consumers.clear()

    # -- publishing -------------------------------------------------------

    async def _publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str | None,
        headers: dict[str, Any] | None = None,
        persistent: bool = True,
    ) -> None:
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT,
            message_id=message_id,
            headers=headers or {},
            timestamp=datetime.now(UTC),
        )
        deadline = time.monotonic() + self.publish_timeout
        delay = 0.2
        while True:
            try:
                await self._exchanges[exchange].publish(message, routing_key=routing_key, timeout=10)
                return
            except aio_pika.exceptions.DeliveryError as exc:
                raise TransientError(f"broker refused the message: {exc}") from exc
            except (*PUBLISH_ERRORS, KeyError) as exc:
                if time.monotonic() + delay > deadline:
                    raise TransientError(f"publish to {exchange} failed: {exc!r}") from exc
                log.warning("publish to %s failed (%r); retrying", exchange, exc, extra={"message_id": message_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)

    async def publish_inbound(self, inbound: Inbound) -> None:
        key = inbound.conversation_key
        await self._publish(
            "inbound", self.topology.inbound_key(key), inbound.model_dump_json().encode(), inbound.id, {"x-lane": key}
        )

    async def publish_crew(self, inbound: Inbound) -> None:
        """An executor's message, on to the crew queue; returns once the broker confirmed it."""
        await self._publish("inbound", "crew", inbound.model_dump_json().encode(), inbound.id)

    async def publish_outbound(self, outbound: Outbound) -> None:
        await self._publish("outbound", outbound.channel, outbound.model_dump_json().encode(), outbound.id)

    async def publish_outbounds(self, outbounds: Sequence[Outbound]) -> None:
        await asyncio.gather(*(self.publish_outbound(o) for o in outbounds))

    async def publish_event(self, event: Event) -> None:
        """Events feed live screens; they are not the record: no confirm is awaited, a failure is logged."""
        if self._event_exchange is None:
            return
        message = aio_pika.Message(
            event.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        try:
            await self._event_exchange.publish(message, routing_key=event.type, mandatory=False)
        except PUBLISH_ERRORS as exc:
            log.warning("event %s not published: %s", event.type, exc)

    async def publish_events(self, events: Sequence[Event]) -> None:
        await asyncio.gather(*(self.publish_event(e) for e in events))

    async def dead_letter(self, delivery: Delivery, reason: str, source: str) -> None:
        """Move a message to the dead-letter queue with the reason, then ack the original."""
        headers = dict(delivery.headers)
        headers.update(
            {
                "x-reason": reason[:2000],
                "x-source": source,
                "x-failed-at": datetime.now(UTC).isoformat(),
                "x-original-message-id": delivery.message_id or "",
            }
        )
        await self._publish("dead", "", delivery.body, delivery.message_id, headers)
        await delivery.ack()

    # -- consuming --------------------------------------------------------

    async def consume(
        self,
        queue_name: str,
        handler: BatchHandler,
        *,
        max_batch: int = 1,
        max_wait: float = 0.0,
        prefetch: int | None = None,
        lanes: int = 1,
    ) -> Consumer:
        assert self._connection is not None, "connect() first"
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch or self.prefetch)
        queue = await channel.get_queue(queue_name, ensure=True)
        consumer = Consumer(queue, handler, max_batch=max_batch, max_wait=max_wait, lanes=lanes)
        await consumer.start()
        self._consumers.append(consumer)
        return consumer

    async def consume_inbound(
        self, handler: BatchHandler, *, max_batch: int = 1, max_wait: float = 0.0, lanes: int = 1
    ) -> Consumer:
        """Every inbound shard queue, through one consumer. The broker makes this process the active consumer
        of the shards no other router holds, and hands a dead router's shards to the rest."""
        assert self._connection is not None, "connect() first"
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.prefetch)
        queues = [await channel.get_queue(name, ensure=True) for name in self.topology.inbound_queues]
        consumer = Consumer(queues, handler, max_batch=max_batch, max_wait=max_wait, lanes=lanes)
        await consumer.start()
        self._consumers.append(consumer)
        return consumer

    async def consume_crew(self, handler: BatchHandler) -> Consumer:
        return await self.consume(self.topology.crew_queue, handler, max_batch=1)

    async def consume_private(
        self, exchange: str, routing_keys: Sequence[str], handler: BatchHandler, *, max_batch: int = 50
    ) -> Consumer:
        """An exclusive queue for this process only (live screens, local sockets)."""
        assert self._connection is not None, "connect() first"
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.prefetch)
        name = f"{self.topology.prefix}.private.{exchange}.{uuid.uuid4().hex[:12]}"
        queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
        target = await channel.get_exchange(self._exchange_name(exchange))
        for key in routing_keys:
            await queue.bind(target, routing_key=key)
        consumer = Consumer(queue, handler, max_batch=max_batch, max_wait=0.0)
        await consumer.start()
        self._consumers.append(consumer)
        return consumer

    def _exchange_name(self, kind: str) -> str:
        return {
            "inbound": self.topology.inbound_exchange,
            "outbound": self.topology.outbound_exchange,
            "events": self.topology.events_exchange,
            "dead": self.topology.dead_exchange,
        }[kind]

    async def queue_depths(self, names: Sequence[str]) -> dict[str, int]:
        """Messages ready in each queue (for /metrics); a missing queue reads as 0."""
        assert self._connection is not None
        depths: dict[str, int] = {}
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            for name in names:
                try:
                    queue = await channel.declare_queue(name, passive=True)
                    depths[name] = int(queue.declaration_result.message_count or 0)
                except PUBLISH_ERRORS:
                    depths[name] = 0
                    if channel.is_closed:
                        channel = await self._connection.channel(publisher_confirms=False)
        finally:
            with contextlib.suppress(*PUBLISH_ERRORS):
                await channel.close()
        return depths

    async def delete_topology(self, channels: Sequence[str]) -> None:
        """Remove every queue and exchange of this prefix (tests clean up after themselves)."""
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        for name in self.topology.all_queues(channels):
            with contextlib.suppress(*PUBLISH_ERRORS):
                await channel.queue_delete(name)
        for name in self.topology.all_exchanges():
            with contextlib.suppress(*PUBLISH_ERRORS):
                await channel.exchange_delete(name)
        with contextlib.suppress(*PUBLISH_ERRORS):
            await channel.close()
