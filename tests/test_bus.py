"""The bus against the real RabbitMQ: confirmed publishes, manual acks, dead letters with their reason."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from adshub.bus import Delivery, Finish, RabbitBus
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

    await bus.consume_inbound(handler, max_batch=10, max_wait=0.01)
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

    await bus.consume_inbound(handler)
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

    await bus.consume_inbound(poison)
    await bus.consume(bus.topology.dead_queue, recorder)
    await bus.publish_inbound(sample(9))
    await asyncio.wait_for(done.wait(), 10)
    assert dead[0].headers["x-reason"] == "invalid inbound message: text: field required"
    assert dead[0].headers["x-source"] == "test"
    assert dead[0].message_id == "webchat:s:9"


async def test_a_finishing_step_runs_while_the_next_batch_is_handled_and_steps_keep_their_order(
    bus: RabbitBus,
) -> None:
    recorded: list[str] = []
    finished: list[str] = []
    in_flight = 0
    most_in_flight = 0
    second_recorded = asyncio.Event()
    all_done = asyncio.Event()

    async def handler(batch: list[Delivery]) -> Finish:
        ids = [d.message_id or "" for d in batch]
        recorded.extend(ids)
        if len(recorded) >= 2:
            second_recorded.set()

        async def finish() -> None:
            nonlocal in_flight, most_in_flight
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
            if ids == ["webchat:s:0"]:
                await asyncio.wait_for(second_recorded.wait(), 10)
            await asyncio.sleep(0.01)
            finished.extend(ids)
            for d in batch:
                await d.ack()
            in_flight -= 1
            if len(finished) == 4:
                all_done.set()

        return finish

    for n in range(4):
        await bus.publish_inbound(sample(n))
    await bus.consume_inbound(handler, max_batch=1)
    await asyncio.wait_for(all_done.wait(), 20)
    expected = [f"webchat:s:{n}" for n in range(4)]
    assert recorded == expected and finished == expected
    assert most_in_flight == 1


async def test_a_failed_finishing_step_sends_its_messages_back(bus: RabbitBus) -> None:
    attempts: list[bool] = []
    done = asyncio.Event()

    async def handler(batch: list[Delivery]) -> Finish:
        async def finish() -> None:
            for d in batch:
                attempts.append(d.redelivered)
                if not d.redelivered:
                    raise RuntimeError("broker went away while publishing the replies")
                await d.ack()
                done.set()

        return finish

    await bus.consume_inbound(handler)
    await bus.publish_inbound(sample())
    await asyncio.wait_for(done.wait(), 10)
    assert attempts == [False, True]
