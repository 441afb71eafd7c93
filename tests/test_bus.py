"""The bus against the real RabbitMQ: confirmed publishes, manual acks, dead letters with their reason."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from adshub.bus import Delivery, RabbitBus
from adshub.contract import Inbound, Sender


def sample(n: int = 1) -> Inbound:
    return Inbound(
        id=f"webchat:s:{n}",
        channel="webchat",
        address="s",
        sender=Sender(id="s"),
        text=f"текст {n}",
        received_at=datetime.now(UTC),
    )


async def test_published_inbound_is_consumed_and_acked(bus: RabbitBus) -> None:
    got: list[Delivery] = []
    done = asyncio.Event()

    async def handler(batch: list[Delivery]) -> None:
        for d in batch:
            got.append(d)
            await d.ack()
        if len(got) >= 3:
            done.set()

    await bus.consume(bus.topology.inbound_queue, handler, max_batch=10, max_wait=0.01)
    for n in range(3):
        await bus.publish_inbound(sample(n))
    await asyncio.wait_for(done.wait(), 10)
    assert sorted(d.message_id or "" for d in got) == ["webchat:s:0", "webchat:s:1", "webchat:s:2"]
    assert all(Inbound.model_validate_json(d.body).channel == "webchat" for d in got)


async def test_unacked_message_is_redelivered(bus: RabbitBus) -> None:
    seen: list[bool] = []
    done = asyncio.Event()

    async def handler(batch: list[Delivery]) -> None:
        for d in batch:
            seen.append(d.redelivered)
            if len(seen) == 1:
                await d.nack(requeue=True)
            else:
                await d.ack()
                done.set()

    await bus.consume(bus.topology.inbound_queue, handler)
    await bus.publish_inbound(sample())
    await asyncio.wait_for(done.wait(), 10)
    assert seen == [False, True]


async def test_dead_letter_keeps_the_reason(bus: RabbitBus) -> None:
    dead: list[Delivery] = []
    done = asyncio.Event()

    async def poison(batch: list[Delivery]) -> None:
        for d in batch:
            await bus.dead_letter(d, "invalid inbound message: text: field required", source="test")

    async def recorder(batch: list[Delivery]) -> None:
        for d in batch:
            dead.append(d)
            await d.ack()
        done.set()

    await bus.consume(bus.topology.inbound_queue, poison)
    await bus.consume(bus.topology.dead_queue, recorder)
    await bus.publish_inbound(sample(9))
    await asyncio.wait_for(done.wait(), 10)
    assert dead[0].headers["x-reason"] == "invalid inbound message: text: field required"
    assert dead[0].headers["x-source"] == "test"
    assert dead[0].message_id == "webchat:s:9"
