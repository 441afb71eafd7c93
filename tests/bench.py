"""``make bench``: many concurrent residents on the web chat, through the real hub and through
the floor pipeline, in one run on the same RabbitMQ and the same Mongo-protocol server.

Each resident opens a chat session, reports an emergency and waits for the numbered
reply; latency is from sending the message to receiving that reply. Both pipelines talk to
the database without retryable writes, as the hub does on its embedded database. Options:
``python -m tests.bench --residents 40 --messages 2000 --warmup 200``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from app.embedded import EmbeddedDatabase, free_port, port_open

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "В подвале прорвало трубу горячей воды, ул. Ленина {n}, кв {f}",
    "Пахнет газом в подъезде, ул. Мира {n}, 3 этаж",
    "Застрял в лифте с ребёнком, ул. Садовая {n}, подъезд 2",
    "Из щитка искры и дым! ул. Гагарина {n}, кв {f}",
    "Течёт батарея, кипяток на полу, ул. Кирова {n}, кв {f}",
]


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        return self.messages / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    def line(self) -> str:
        return (
            f"{self.name:<6} {self.throughput:8.1f} msg/s   p50 {self.percentile(50):7.1f} ms   "
            f"p99 {self.percentile(99):7.1f} ms   ({self.messages} messages in {self.seconds:.1f} s)"
        )


async def resident(http: aiohttp.ClientSession, port: int, n: int) -> float:
    session = f"bench{uuid.uuid4().hex[:20]}"
    async with http.ws_connect(f"http://127.0.0.1:{port}/chat/ws?session={session}&fresh=1") as ws:
        await ws.receive_json(timeout=30)
        text = TEXTS[n % len(TEXTS)].format(n=n % 97 + 1, f=n % 300 + 1)
        started = time.perf_counter()
        await ws.send_json({"type": "message", "id": "m1", "text": text})
        while True:
            frame = await ws.receive_json(timeout=60)
            if frame.get("type") == "message" and (frame.get("request") or {}).get("number"):
                return time.perf_counter() - started
            if frame.get("type") == "error":
                raise RuntimeError(f"error frame: {frame}")


async def drive(name: str, port: int, residents: int, messages: int, warmup: int) -> Result:
    latencies: list[float] = []
    counter = iter(range(10**9))

    async def worker(http: aiohttp.ClientSession, budget: list[int], keep: bool) -> None:
        while budget[0] > 0:
            budget[0] -= 1
            latency = await resident(http, port, next(counter))
            if keep:
                latencies.append(latency)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        warm = [warmup]
        await asyncio.gather(*(worker(http, warm, False) for _ in range(residents)))
        budget = [messages]
        started = time.perf_counter()
        await asyncio.gather(*(worker(http, budget, True) for _ in range(residents)))
        seconds = time.perf_counter() - started
    return Result(name, len(latencies), seconds, latencies)


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{command} did not start; see {log}")
        time.sleep(0.2)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=40)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--amqp", default=os.environ.get("ADSHUB_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="adshub-bench-"))
    database = EmbeddedDatabase("127.0.0.1", free_port(), workdir / "db")
    database.start()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    hub_port, floor_port = free_port(), free_port()
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    hub_env = {
        **base_env,
        "ADSHUB_MONGO_URL": f"{database.url}bench_hub?retryWrites=false",
        "ADSHUB_AMQP_URL": args.amqp,
        "ADSHUB_HTTP_PORT": str(hub_port),
        "ADSHUB_BUS_PREFIX": prefix,
        "ADSHUB_LOG_LEVEL": "WARNING",
        "ADSHUB_EMBEDDED_DB": "false",
        "ADSHUB_CHAT_RATE_PER_MINUTE": "100000",
        "ADSHUB_CHAT_IP_RATE_PER_MINUTE": "1000000",
        "ADSHUB_CHAT_SOCKETS_PER_ADDRESS": "100000",
        "ADSHUB_CHAT_FRAMES_PER_MINUTE": "1000000",
        "ADSHUB_DATA_DIR": str(workdir / "var"),
    }
    floor_env = {
        **base_env,
        "FLOOR_PORT": str(floor_port),
        "FLOOR_MONGO_URL": f"{database.url}bench_floor?retryWrites=false",
        "FLOOR_AMQP_URL": args.amqp,
        "FLOOR_PREFIX": prefix,
    }
    print(
        f"residents: {args.residents}, messages per pipeline: {args.messages} (after {args.warmup} warm-up), "
        f"cores: {os.cpu_count()}"
    )
    try:
        floor = start([sys.executable, "-m", "tests.floor"], floor_env, floor_port, workdir / "floor.log")
        try:
            floor_result = await drive("floor", floor_port, args.residents, args.messages, args.warmup)
        finally:
            stop(floor)
        hub = start([sys.executable, "-m", "app", "run", "router", "webchat"], hub_env, hub_port, workdir / "hub.log")
        try:
            hub_result = await drive("hub", hub_port, args.residents, args.messages, args.warmup)
        finally:
            stop(hub)
        print(hub_result.line())
        print(floor_result.line())
        print(f"ratio hub/floor (throughput): {hub_result.throughput / floor_result.throughput:.2f}")
    finally:
        database.stop()
        await _cleanup(args.amqp, prefix)
        shutil.rmtree(workdir, ignore_errors=True)


async def _cleanup(amqp: str, prefix: str) -> None:
    from adshub.bus import RabbitBus, Topology

    bus = RabbitBus(amqp, Topology(prefix))
    await bus.connect()
    await bus.delete_topology(["webchat"])
    channel = await bus._connection.channel()  # type: ignore[union-attr]
    await channel.queue_delete(f"{prefix}.floor.in")
    await channel.exchange_delete(f"{prefix}.floor.out")
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
