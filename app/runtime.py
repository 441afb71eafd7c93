"""The composition root: start the parts of the hub in one process, or only
the named ones, so that parts can run as separate processes against the same
RabbitMQ and MongoDB.

Parts: ``router`` (registration, clocks, dead letters), ``inbox`` (the
dispatchers' web app), ``channels`` (every channel the settings switch on), and
one part per channel (``webchat``, ``telegram``, …; a channel starts only when
its settings are present).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any

from aiohttp import web

from adshub.bus import RabbitBus, topology_of
from adshub.contract import Inbound
from adshub.errors import ConfigurationError, TransientError
from adshub.metrics import METRICS
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase, ensure_database
from app.web import init_app
from bots.texts import Texts
from channels import REGISTRY, channel_class
from channels.base import Channel, ChannelContext
from channels.delivery import DeliveryWorker
from domain.deadlines import DeadlinePolicy
from inbox import init_crew, init_inbox
from inbox.actions import ChannelDirectory
from journal.repository import Journal
from router.deadletters import DeadLetterRecorder
from router.service import Router
from router.watch import ClockWatcher

log = logging.getLogger("adshub.runtime")

CORE_PARTS = ("router", "inbox")
CHANNELS_PART = "channels"
"""Every channel the company's settings switch on, in one part (``adshub run router channels``)."""


def all_parts() -> list[str]:
    return [*CORE_PARTS, CHANNELS_PART, *REGISTRY]


def channel_directory(settings: Settings) -> ChannelDirectory:
    """Every registered channel's profile, and which of them the settings switch on."""
    classes = {name: channel_class(name) for name in REGISTRY}
    return ChannelDirectory(
        profiles={name: cls.profile for name, cls in classes.items()},
        configured=frozenset(name for name, cls in classes.items() if cls.configured(settings)),
        start_links={name: partial(cls.start_link, settings) for name, cls in classes.items()},
    )


class Hub:
    """Everything one process runs; ``start`` in dependency order, ``stop`` in reverse, draining."""

    def __init__(self, settings: Settings, parts: Sequence[str] = ()) -> None:
        unknown = [p for p in parts if p not in all_parts()]
        if unknown:
            raise ConfigurationError(f"unknown part(s): {', '.join(unknown)}; known: {', '.join(all_parts())}")
        self.settings = settings
        self.parts = list(parts) or [*CORE_PARTS, CHANNELS_PART]
        self.embedded: EmbeddedDatabase | None = None
        self.journal: Journal | None = None
        self.bus: RabbitBus | None = None
        self.channels: list[Channel] = []
        self.delivery_workers: list[DeliveryWorker] = []
        self.router: Router | None = None
        self.watcher: ClockWatcher | None = None
        self.runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.port: int | None = None

    async def start(self) -> None:
        s = self.settings
        self.embedded = await ensure_database(s.mongo_url, s.data_dir, s.embedded_db)
        self.journal = Journal.connect(s.mongo_url, s.database_name, retry_writes=False if self.embedded else None)
        await _retry("database", self.journal.prepare)
        self.bus = RabbitBus(s.amqp_url, topology_of(s), prefetch=s.prefetch)
        await self.bus.connect()
        texts = Texts(s.zone, s.company_name, s.company_phone)
        directory = channel_directory(s)

        context = ChannelContext(settings=s, journal=self.journal)
        for name in REGISTRY:
            wanted = name in self.parts or CHANNELS_PART in self.parts
            if wanted and name in directory.configured:
                self.channels.append(channel_class(name)(context))
        for channel in self.channels:
            worker = DeliveryWorker(channel, self.bus, self.journal)
            await worker.start()
            self.delivery_workers.append(worker)

        if "router" in self.parts:
            self.router = Router(
                self.journal, self.bus, texts, DeadlinePolicy.from_settings(s), phone_channel=directory.phone_channel()
            )
            await self.router.start()
            await DeadLetterRecorder(self.journal, self.bus).start()
            self.watcher = ClockWatcher(
                self.journal,
                self.bus,
                timedelta(minutes=s.clock_warning_minutes),
                managers=s.manager_alert_targets,
                texts=texts,
            )
            await self.watcher.start()

        api_routes: list[web.AbstractRouteDef] = [r for ch in self.channels for r in ch.routes()]
        routes: list[web.AbstractRouteDef] = []
        subapps: list[tuple[str, web.Application]] = []
        if "inbox" in self.parts:
            inbox_app = init_inbox(s, self.journal, self.bus, texts, directory)
            subapps.extend([("/inbox", inbox_app), ("/crew", init_crew(inbox_app))])
            routes.extend([web.get("/", _to_inbox), web.get("/inbox", _to_inbox)])
        remote = [c.name for c in (channel_class(n) for n in REGISTRY) if not c.profile.local_delivery]
        cleanup = [_queue_depth_ctx(self.bus, remote)]
        if api_routes or routes or subapps:
            self.app = init_app(s, self.journal, api_routes, routes, cleanup=cleanup, subapps=subapps)
            self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=10)
            await self.runner.setup()
            site = web.TCPSite(self.runner, s.http_host, s.http_port, reuse_address=True)
            await site.start()
            self.port = _bound_port(self.runner) or s.http_port
        for channel in self.channels:
            await channel.start(self.publish)
        log.info(
            "adshub started: parts=%s channels=%s http=%s",
            self.parts,
            [c.name for c in self.channels],
            f"{s.http_host}:{self.port}" if self.port else "-",
        )

    async def publish(self, inbound: Inbound) -> None:
        assert self.bus is not None
        await self.bus.publish_inbound(inbound)

    async def stop(self) -> None:
        """Stop intake first, let in-flight work drain, then close the clients; every step is bounded."""
        for channel in self.channels:
            await _bounded(f"stop channel {channel.name}", channel.stop(), 15)
        if self.bus is not None:
            await _bounded("drain consumers", self.bus.stop_consuming(drain_timeout=30), 40)
        for worker in self.delivery_workers:
            await _bounded(f"record deliveries of {worker.channel.name}", worker.stop(), 10)
        if self.watcher is not None:
            await _bounded("stop clock watcher", self.watcher.stop(), 10)
        if self.runner is not None:
            await _bounded("stop HTTP server", self.runner.cleanup(), 20)
        if self.bus is not None:
            await _bounded("close broker connection", self.bus.close(), 15)
        if self.journal is not None:
            await _bounded("close database client", self.journal.close(), 10)
        if self.embedded is not None:
            await _bounded("stop embedded database", asyncio.to_thread(self.embedded.stop), 30)

    def urls(self) -> dict[str, str]:
        base = self.settings.public_url or f"http://{self.settings.http_host}:{self.port}"
        found = {purpose: f"{base}{path}" for c in self.channels for purpose, path in c.pages().items()}
        if "inbox" in self.parts:
            found["inbox"] = f"{base}/inbox"
        if self.port:
            found["metrics"] = f"{base}/metrics"
        return found


async def _bounded(what: str, action: Any, seconds: float) -> None:
    try:
        await asyncio.wait_for(action, seconds)
    except TimeoutError:
        log.error("shutdown step took longer than %.0fs and was abandoned: %s", seconds, what)
    except Exception:
        log.exception("shutdown step failed: %s", what)


async def _to_inbox(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/inbox/")


def _bound_port(runner: web.AppRunner) -> int | None:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    return None


def _queue_depth_ctx(bus: RabbitBus, channels: list[str]) -> Any:
    async def ctx(app: web.Application) -> Any:
        async def sample() -> None:
            while True:
                with contextlib.suppress(Exception):
                    names = [
                        *bus.topology.inbound_queues,
                        bus.topology.dead_queue,
                        *(bus.topology.outbound_queue(c) for c in channels),
                    ]
                    for name, depth in (await bus.queue_depths(names)).items():
                        METRICS.queue_depth.labels(queue=name).set(depth)
                await asyncio.sleep(15)

        task = asyncio.create_task(sample())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


async def _retry(what: str, action: Any, attempts: int = 30) -> None:
    for attempt in range(1, attempts + 1):
        try:
            await action()
            return
        except Exception as exc:
            if attempt == attempts:
                raise TransientError(f"{what} unavailable: {exc}") from exc
            log.warning("%s not ready (%s), attempt %d", what, exc, attempt)
            await asyncio.sleep(min(attempt, 5))


def settle_memory() -> None:
    """Keep the long-lived start-up objects (dictionaries, caches, templates) out of the garbage collector's
    full passes, and collect young objects less often: full passes over them stall every request in flight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def run(settings: Settings, parts: Sequence[str] = ()) -> None:
    """Run until SIGTERM or SIGINT, then drain and exit."""
    hub = Hub(settings, parts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await hub.start()
        settle_memory()
        for name, url in hub.urls().items():
            print(f"{name}: {url}", flush=True)
        await stop.wait()
        log.info("stopping: draining in-flight work")
    finally:
        await hub.stop()
        log.info("stopped")
