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
from typing import Any

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


async def drive(name: str, port: int, residents: int, messages: int, warmup: int, during: Any = None) -> Result:
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
        side = asyncio.create_task(during()) if during is not None else None
        await asyncio.gather(*(worker(http, budget, True) for _ in range(residents)))
        seconds = time.perf_counter() - started
        if side is not None:
            await side
    return Result(name, len(latencies), seconds, latencies)


class BigLetter:
    """A real mailbox beside the chat: one large letter arrives a second into the measured run."""

    def __init__(self, megabytes: float) -> None:
        from tests.mailservers import Dovecot, SmtpSink

        self.size = int(megabytes * 2**20)
        self.dovecot = Dovecot()
        self.dovecot.start()
        self.smtp = SmtpSink()
        self.smtp.start()
        self.sent_at = 0.0
        self.answer_seconds: float | None = None

    def env(self) -> dict[str, str]:
        return {
            "ADSHUB_IMAP_URL": self.dovecot.url,
            "ADSHUB_SMTP_URL": self.smtp.url,
            "ADSHUB_EMAIL_FROM": "АДС УК <ads@uk.example>",
            "ADSHUB_IMAP_POLL_SECONDS": "0.5",
        }

    async def deliver(self) -> None:
        from email.message import EmailMessage

        await asyncio.sleep(1.0)
        letter = EmailMessage()
        letter["From"] = "Иванова Мария <maria@example.ru>"
        letter["To"] = "ads@uk.example"
        letter["Subject"] = "Фото потопа в подвале"
        letter["Message-ID"] = "<bench-big-letter@example.ru>"
        letter.set_content("Вода по щиколотку в подвале, Ленина 5. Фото во вложении.")
        photo = os.urandom(self.size * 3 // 4)
        letter.add_attachment(photo, maintype="image", subtype="jpeg", filename="potop.jpg")
        raw = letter.as_bytes()
        self.sent_at = time.perf_counter()
        await asyncio.to_thread(self.dovecot.append, raw)

    async def answered(self) -> None:
        for _ in range(1500):
            if self.smtp.messages:
                break
            await asyncio.sleep(0.2)
        if self.smtp.messages:
            self.answer_seconds = time.perf_counter() - self.sent_at

    def line(self) -> str:
        answered = f"answered {self.answer_seconds:.1f} s after it arrived" if self.answer_seconds else "not answered"
        return f"letter {self.size / 2**20:.1f} MB during the run: {answered}"

    def stop(self) -> None:
        self.smtp.stop()
        self.dovecot.stop()


def start(
    command: list[str], env: dict[str, str], port: int, log: Path, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + timeout
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
    parser.add_argument(
        "--big-letter",
        type=float,
        default=0.0,
        metavar="MB",
        help="also run the mailbox (Dovecot, aiosmtpd) and drop a letter this large into it during the hub's run",
    )
    parser.add_argument("--no-floor", action="store_true", help="measure the hub alone")
    parser.add_argument(
        "--journal",
        type=int,
        default=0,
        metavar="N",
        help="register into a journal already holding N requests of history (tests.history; filled once "
        "into var/bench/journal-N and reused; each run registers into a copy, so the history stays as generated)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="adshub-bench-"))
    storage = workdir / "db"
    if args.journal:
        from tests.history import fill_directory

        filled = REPO / "var" / "bench" / f"journal-{args.journal}"
        await fill_directory(filled, args.journal)
        storage = workdir / "journal"
        await asyncio.to_thread(shutil.copytree, filled / "db", storage)
    database = EmbeddedDatabase("127.0.0.1", free_port(), storage, cache_size="1G" if args.journal else "512M")
    database.start(timeout=900.0)
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
        f"cores: {os.cpu_count()}, journal: {args.journal:,} requests of history (embedded SecantusDB; "
        "production MongoDB differs)"
    )
    parts = ["router", "webchat"]
    mail = BigLetter(args.big_letter) if args.big_letter else None
    if mail is not None:
        hub_env.update(mail.env())
        parts.append("email")
    try:
        floor_result = None
        if not args.no_floor:
            floor = start([sys.executable, "-m", "tests.floor"], floor_env, floor_port, workdir / "floor.log")
            try:
                floor_result = await drive("floor", floor_port, args.residents, args.messages, args.warmup)
            finally:
                stop(floor)
        hub = start(
            [sys.executable, "-m", "app", "run", *parts],
            hub_env,
            hub_port,
            workdir / "hub.log",
            timeout=900.0 if args.journal else 60.0,
        )
        try:
            during = mail.deliver if mail is not None else None
            hub_result = await drive("hub", hub_port, args.residents, args.messages, args.warmup, during)
            if mail is not None:
                await mail.answered()
        finally:
            stop(hub)
        print(hub_result.line())
        if mail is not None:
            print(mail.line())
        if floor_result is not None:
            print(floor_result.line())
            print(f"ratio hub/floor (throughput): {hub_result.throughput / floor_result.throughput:.2f}")
    finally:
        if mail is not None:
            mail.stop()
        database.stop()
        await _cleanup(args.amqp, prefix)
        shutil.rmtree(workdir, ignore_errors=True)


async def delete_topology(amqp: str, prefix: str, channels: list[str]) -> None:
    """Remove a finished run's queues and exchanges from the broker."""
    from adshub.bus import RabbitBus, Topology

    bus = RabbitBus(amqp, Topology(prefix))
    await bus.connect()
    await bus.delete_topology(channels)
    await bus.close()


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
