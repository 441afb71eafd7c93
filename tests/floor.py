"""The floor pipeline for ``make bench``: the least a numbered reply can cost on the same servers.

socket → broker → one counter update and one insert → broker → socket, speaking
the same web chat frames as the hub. Run as ``python -m tests.floor`` with
FLOOR_PORT, FLOOR_MONGO_URL, FLOOR_AMQP_URL and FLOOR_PREFIX in the environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from datetime import UTC, datetime

import aio_pika
from aiohttp import WSMsgType, web
from pymongo import AsyncMongoClient, ReturnDocument


async def main() -> None:
    port = int(os.environ["FLOOR_PORT"])
    prefix = os.environ["FLOOR_PREFIX"]
    mongo = AsyncMongoClient(os.environ["FLOOR_MONGO_URL"], tz_aware=True)
    db = mongo.get_default_database("floor")
    await db.counters.update_one({"_id": "floor"}, {"$setOnInsert": {"seq": 0}}, upsert=True)
    connection = await aio_pika.connect_robust(os.environ["FLOOR_AMQP_URL"])
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=64)
    inbound = await channel.declare_queue(f"{prefix}.floor.in", durable=True)
    outbound_exchange = await channel.declare_exchange(
        f"{prefix}.floor.out", aio_pika.ExchangeType.FANOUT, durable=True
    )
    replies = await channel.declare_queue(f"{prefix}.floor.replies.{uuid.uuid4().hex[:8]}", exclusive=True)
    await replies.bind(outbound_exchange)
    sockets: dict[str, web.WebSocketResponse] = {}

    async def register(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        frame = json.loads(message.body)
        counter = await db.counters.find_one_and_update(
            {"_id": "floor"}, {"$inc": {"seq": 1}}, return_document=ReturnDocument.AFTER
        )
        number = f"2026-{counter['seq']:06d}"
        await db.requests.insert_one(
            {"_id": number, "session": frame["session"], "text": frame["text"], "at": datetime.now(UTC)}
        )
        reply = {"session": frame["session"], "number": number}
        await outbound_exchange.publish(
            aio_pika.Message(json.dumps(reply).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), ""
        )
        await message.ack()

    async def deliver(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        reply = json.loads(message.body)
        ws = sockets.get(reply["session"])
        if ws is not None and not ws.closed:
            await ws.send_json(
                {
                    "type": "message",
                    "text": f"Заявка № {reply['number']}",
                    "request": {"number": reply["number"], "deadline": None},
                }
            )
        await message.ack()

    await inbound.consume(register)
    await replies.consume(deliver)

    async def socket(request: web.Request) -> web.StreamResponse:
        session = request.query["session"]
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets[session] = ws
        await ws.send_json({"type": "history", "messages": []})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            body = json.dumps({"session": session, "text": frame["text"]}).encode()
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), inbound.name
            )
            await ws.send_json({"type": "ack", "id": frame["id"]})
        sockets.pop(session, None)
        return ws

    app = web.Application()
    app.router.add_get("/chat/ws", socket)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("floor ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await connection.close()
    await mongo.close()


if __name__ == "__main__":
    asyncio.run(main())
