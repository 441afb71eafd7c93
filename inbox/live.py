"""Live updates for dispatchers: bus events fanned out to every open inbox page (Server-Sent Events).

Each inbox process consumes the events exchange through its own queue, so
several inbox processes all receive every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from adshub.bus import Bus, Delivery
from domain.deadlines import CLOCK_LABELS

log = logging.getLogger("adshub.inbox.live")
HEARTBEAT = 15.0


class EventHub:
    """``listeners`` hear each event before the pages do (the inbox list's board: a page reloading on an event
    must find what it names)."""

    def __init__(self, bus: Bus, listeners: Sequence[Callable[[dict[str, Any]], None]] = ()) -> None:
        self.bus = bus
        self.listeners = tuple(listeners)
        self._clients: set[asyncio.Queue[dict[str, Any] | None]] = set()

    async def start(self) -> None:
        await self.bus.consume_private("events", ["#"], self._on_events)

    async def _on_events(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                event = json.loads(delivery.body)
            except ValueError:
                event = None
            if isinstance(event, dict):
                for listener in self.listeners:
                    try:
                        listener(event)
                    except Exception:
                        log.exception("event listener failed on %s", event.get("type"))
                for queue in list(self._clients):
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(event)
            await delivery.ack()

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=500)
        self._clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._clients.discard(queue)

    def close(self) -> None:
        """End every open stream (the server is shutting down); the pages reconnect to another process."""
        for queue in list(self._clients):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        queue = self.subscribe()
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if event is None:
                    break
                public = {k: event.get(k) for k in ("type", "conversation_id", "request_number", "message_id")}
                data = event.get("data") or {}
                public["emergency"] = bool(data.get("emergency"))
                if data.get("clock"):
                    public["label"] = CLOCK_LABELS.get(str(data["clock"]), "")
                await response.write(f"data: {json.dumps(public, ensure_ascii=False)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.unsubscribe(queue)
        return response
