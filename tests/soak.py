"""``make soak``: the hub on every channel at once for a bounded time, then a count of what came out.

One hub process (router, web chat, Telegram, VK, mail, voicemail) on its own embedded database and bus
prefix; residents write through the web chat's WebSocket, the Telegram and VK stand-ins (the hub polls
them as it polls the real APIs), letters put into a real Dovecot mailbox, and signed voicemail webhooks.
Each resident's first message reports a problem with an address, the later ones add to it. When the time
is up the soak waits for the queues to drain and checks: every message in the journal once, every
message but a voicemail answered exactly once (in the journal and at the channel's transport), the year's
numbers unique and gap-free. It prints the resident memory and open file descriptors of the hub and the
database at the start and the end. ``python -m tests.soak [--minutes 10] [--rate 4]``; exits 1 when a
check fails. Figures come from SecantusDB (embedded); production MongoDB differs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from app.embedded import EmbeddedDatabase, free_port
from channels.voicemail.webhook import hook_signature
from journal.repository import Journal
from tests.bench import delete_topology, start, stop
from tests.helpers import ChatClient, connect_chat, queues_idle
from tests.mailservers import Dovecot, SmtpSink, letter
from tests.standins.telegram_api import TelegramStandIn, message_update
from tests.standins.vk_api_server import VKStandIn, message_new

TOKEN = "123456:soak-token"
VK_TOKEN = "vk-soak-token"
GROUP = 77001
SECRET = "soak-hook-secret"
CHANNELS = ("webchat", "telegram", "vk", "email", "voicemail")
FIRST = [
    "Течёт батарея в комнате, ул. Ленина {n}, кв {f}",
    "Засор канализации на кухне, ул. Мира {n}, кв {f}",
    "Нет горячей воды второй день, ул. Садовая {n}, кв {f}",
    "Не работает лифт в подъезде 2, ул. Гагарина {n}",
    "Протекает крыша над кухней, ул. Кирова {n}, кв {f}",
]
LATER = ["Вода всё ещё идёт", "Когда придёт мастер?", "Дома будем после 18:00", "Фото отправить не могу", "Спасибо"]


def process_figures(pid: int) -> tuple[float, int]:
    """Resident memory in MB and open file descriptors of a process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Resident:
    channel: str
    n: int
    sent: int = 0
    texts: list[str] = field(default_factory=list)

    def next_text(self, rng: random.Random) -> str:
        self.sent += 1
        if self.sent == 1:
            return rng.choice(FIRST).format(n=self.n + 1, f=rng.randint(1, 200))
        return f"{rng.choice(LATER)} ({self.sent})"


class Soak:
    def __init__(self, workdir: Path, residents_per_channel: int) -> None:
        self.workdir = workdir
        self.database = EmbeddedDatabase("127.0.0.1", free_port(), workdir / "db", cache_size="512M")
        self.telegram = TelegramStandIn(token=TOKEN)
        self.vk = VKStandIn(token=VK_TOKEN, group_id=GROUP)
        self.dovecot = Dovecot()
        self.smtp = SmtpSink()
        self.port = free_port()
        self.prefix = f"soak-{uuid.uuid4().hex[:8]}"
        self.residents = [Resident(c, n) for c in CHANNELS for n in range(residents_per_channel)]
        self.chats: dict[int, ChatClient] = {}
        self.chat_replies: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.ids = itertools.count(1)
        self.http: aiohttp.ClientSession | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "ADSHUB_MONGO_URL": f"{self.database.url}soak?retryWrites=false",
            "ADSHUB_HTTP_PORT": str(self.port),
            "ADSHUB_BUS_PREFIX": self.prefix,
            "ADSHUB_LOG_LEVEL": "WARNING",
            "ADSHUB_EMBEDDED_DB": "false",
            "ADSHUB_DATA_DIR": str(self.workdir / "var"),
            "ADSHUB_TELEGRAM_TOKEN": TOKEN,
            "ADSHUB_TELEGRAM_API_BASE": self.telegram.base,
            "ADSHUB_TELEGRAM_POLL_TIMEOUT": "1",
            "ADSHUB_VK_TOKEN": VK_TOKEN,
            "ADSHUB_VK_GROUP_ID": str(GROUP),
            "ADSHUB_VK_API_BASE": self.vk.api_base,
            "ADSHUB_VK_WAIT": "1",
            "ADSHUB_IMAP_URL": self.dovecot.url,
            "ADSHUB_SMTP_URL": self.smtp.url,
            "ADSHUB_EMAIL_FROM": "АДС УК <ads@uk.example>",
            "ADSHUB_IMAP_POLL_SECONDS": "1",
            "ADSHUB_VOICEMAIL_WEBHOOK_SECRET": SECRET,
            "ADSHUB_CHAT_RATE_PER_MINUTE": "100000",
            "ADSHUB_CHAT_IP_RATE_PER_MINUTE": "1000000",
            "ADSHUB_CHAT_SOCKETS_PER_ADDRESS": "100000",
        }

    async def send(self, resident: Resident, rng: random.Random) -> None:
        text = resident.next_text(rng)
        n = next(self.ids)
        assert self.http is not None
        if resident.channel == "webchat":
            chat = self.chats[resident.n]
            await chat.send(f"m{resident.sent:04d}", text)
        elif resident.channel == "telegram":
            self.telegram.add_update(message_update(n, 500_000 + resident.n, resident.sent, text))
        elif resident.channel == "vk":
            self.vk.add_event(message_new(GROUP, 600_000 + resident.n, resident.sent, text))
        elif resident.channel == "email":
            raw = letter(
                "Заявка" if resident.sent == 1 else "Re: Заявка",
                text,
                sender=f"Житель {resident.n} <resident{resident.n}@example.ru>",
                message_id=f"<soak-{resident.n}-{resident.sent}@example.ru>",
            )
            await asyncio.to_thread(self.dovecot.append, raw)
        else:
            body = json.dumps(
                {
                    "id": f"soak-{resident.n}-{resident.sent}",
                    "caller": f"+7912{resident.n:07d}",
                    "transcript": text,
                    "received_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                }
            ).encode()
            stamp = str(int(time.time()))
            headers = {"X-Adshub-Timestamp": stamp, "X-Adshub-Signature": hook_signature(SECRET, stamp, body)}
            url = f"http://127.0.0.1:{self.port}/telephony/voicemail"
            async with self.http.post(url, data=body, headers=headers) as response:
                if response.status >= 300:
                    raise RuntimeError(f"voicemail webhook: HTTP {response.status}")
        self.sent[resident.channel] += 1

    async def listen(self, chat: ChatClient) -> None:
        """Count the hub's replies a resident's widget shows, by their ids."""
        with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
            async for frame in chat.ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(frame.data)
                if isinstance(data, dict) and data.get("type") == "message" and data.get("from") == "hub":
                    self.chat_replies[str(data.get("id"))] += 1


def at_transport(soak: Soak) -> dict[str, int]:
    """Replies each channel's far end has received."""
    return {
        "webchat": sum(soak.chat_replies.values()),
        "telegram": len(soak.telegram.sent),
        "vk": len(soak.vk.sent),
        "email": len(soak.smtp.messages),
    }


async def caught_up(soak: Soak) -> bool:
    """Every message but a voicemail has its answer in the journal, and every answer has reached its far end."""
    journal = Journal.connect(f"{soak.database.url}soak?retryWrites=false", "soak")
    try:
        answerable = await journal.messages.count_documents({"direction": "in", "channel": {"$ne": "voicemail"}})
        answers = {
            c: await journal.messages.count_documents({"direction": "out", "channel": c}) for c in at_transport(soak)
        }
    finally:
        await journal.close()
    return sum(answers.values()) >= answerable and all(n >= answers[c] for c, n in at_transport(soak).items())


async def checks(soak: Soak) -> list[str]:
    """What went wrong, in words; empty when nothing was lost or doubled."""
    problems: list[str] = []
    journal = Journal.connect(f"{soak.database.url}soak?retryWrites=false", "soak")
    try:
        for channel in CHANNELS:
            inbound = await journal.messages.count_documents({"direction": "in", "channel": channel})
            if inbound != soak.sent[channel]:
                problems.append(f"{channel}: {soak.sent[channel]} sent, {inbound} in the journal")
        cursor = await journal.messages.aggregate(
            [
                {"$match": {"direction": "out", "in_reply_to": {"$type": "string"}}},
                {"$group": {"_id": "$in_reply_to", "n": {"$sum": 1}}},
                {"$match": {"n": {"$gt": 1}}},
            ]
        )
        doubled = [d async for d in cursor]
        if doubled:
            problems.append(f"{len(doubled)} messages answered more than once, e.g. {doubled[:3]}")
        answered = {d["in_reply_to"] async for d in journal.messages.find({"direction": "out"}, {"in_reply_to": 1})}
        waiting = [
            m["_id"]
            async for m in journal.messages.find({"direction": "in", "channel": {"$ne": "voicemail"}}, {"_id": 1})
            if m["_id"] not in answered
        ]
        if waiting:
            problems.append(f"{len(waiting)} messages never answered, e.g. {waiting[:3]}")
        outbound = Counter([m["channel"] async for m in journal.messages.find({"direction": "out"}, {"channel": 1})])
        delivered = at_transport(soak)
        twice = [reply for reply, n in soak.chat_replies.items() if n > 1]
        if twice:
            problems.append(f"{len(twice)} chat replies shown twice, e.g. {twice[:3]}")
        for channel, count in delivered.items():
            if count != outbound[channel]:
                problems.append(f"{channel}: {outbound[channel]} replies in the journal, {count} at the transport")
        requests = [r async for r in journal.requests.find({}, {"year": 1, "seq": 1})]
        for year in {r["year"] for r in requests}:
            seqs = sorted(r["seq"] for r in requests if r["year"] == year)
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"numbers of {year} not gap-free: {len(seqs)} requests, last {seqs[-1]}")
        print(
            f"journal: {sum(soak.sent.values())} messages in "
            f"({', '.join(f'{c} {soak.sent[c]}' for c in CHANNELS)}), {sum(outbound.values())} answers out, "
            f"{len(requests)} requests"
        )
    finally:
        await journal.close()
    return problems


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=4.0, help="messages a second, over all channels")
    parser.add_argument("--residents", type=int, default=12, help="residents per channel")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="adshub-soak-"))
    soak = Soak(workdir, args.residents)
    rng = random.Random(5)
    soak.database.start()
    await soak.telegram.start()
    await soak.vk.start()
    soak.dovecot.start()
    soak.smtp.start()
    parts = ["router", "webchat", "telegram", "vk", "email", "voicemail"]
    hub = start([sys.executable, "-m", "app", "run", *parts], soak.env(), soak.port, workdir / "hub.log")
    assert soak.database.process is not None
    pids = {"hub": hub.pid, "database": soak.database.process.pid}
    listeners: list[asyncio.Task[None]] = []
    try:
        async with aiohttp.ClientSession() as http:
            soak.http = http
            for resident in soak.residents:
                if resident.channel == "webchat":
                    chat = await connect_chat(http, soak.port, f"soak-{resident.n:03d}-{uuid.uuid4().hex[:6]}")
                    soak.chats[resident.n] = chat
                    listeners.append(asyncio.create_task(soak.listen(chat)))
            before = {name: process_figures(pid) for name, pid in pids.items()}
            print(f"soak: {args.minutes:g} min at {args.rate:g} messages/s over {len(CHANNELS)} channels")
            deadline = time.monotonic() + args.minutes * 60
            interval = 1.0 / args.rate
            next_at = time.monotonic()
            while time.monotonic() < deadline:
                await soak.send(rng.choice(soak.residents), rng)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            for _ in range(180):
                if await asyncio.to_thread(queues_idle, soak.prefix):
                    break
                await asyncio.sleep(1.0)
            for _ in range(120):
                if await caught_up(soak):
                    break
                await asyncio.sleep(0.5)
            after = {name: process_figures(pid) for name, pid in pids.items()}
            for task in listeners:
                task.cancel()
            problems = await checks(soak)
    finally:
        stop(hub)
        await soak.telegram.stop()
        await soak.vk.stop()
        soak.smtp.stop()
        soak.dovecot.stop()
        soak.database.stop()
        await delete_topology("amqp://guest:guest@127.0.0.1:5672/", soak.prefix, list(CHANNELS))
    print(f"{'process':<10} {'RSS start':>10} {'RSS end':>10} {'fds start':>10} {'fds end':>8}")
    for name in pids:
        print(
            f"{name:<10} {before[name][0]:>8.0f} MB {after[name][0]:>7.0f} MB {before[name][1]:>10} {after[name][1]:>8}"
        )
    for problem in problems:
        print("PROBLEM:", problem)
    if not problems:
        print("nothing lost, nothing doubled")
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs kept in {workdir}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
