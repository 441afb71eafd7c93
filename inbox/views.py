"""Handlers of the dispatcher inbox."""

from __future__ import annotations

import asyncio
import hmac
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlencode

from aiohttp import web

from adshub.errors import Forbidden, InvalidInput, NotFound, QueryTooBroad
from adshub.ratelimit import RateLimiter
from adshub.web import SETTINGS, read_form, render
from bots.texts import STATUS_NAMES
from domain.categories import CATEGORIES
from domain.paid import rubles
from domain.schedule import hours_doc, parse_hours
from inbox.actions import STATUSES, Actor, Inbox
from inbox.calendar import Scheduling, staff_extras
from inbox.crewbot import CrewBot
from inbox.live import EventHub
from inbox.reports import build_report
from inbox.wording import clock_name
from journal.desk import JOURNAL_PAGE_SECONDS, JournalFilters, JournalKey, JournalPage
from journal.documents import ContactDoc, RequestDoc, StaffDoc
from journal.export import JournalWorkbook, csv_text, export_row
from journal.users import ACTION_NAMES, ROLE_NAMES, ROLES, Session, Users, rank

INBOX = web.AppKey("inbox", Inbox)
SCHEDULING = web.AppKey("scheduling", Scheduling)
CREWBOT = web.AppKey("crewbot", CrewBot)
USERS = web.AppKey("users", Users)
LIVE = web.AppKey("live", EventHub)
SESSION_COOKIE = "adshub_session"
LOGIN_CSRF_COOKIE = "adshub_login"
PAGE_SIZE = 50
EXPORT_CHUNK = 256 * 1024


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
routes = web.RouteTableDef()


class LoginThrottle:
    """Stops password guessing without locking the owner out.

    Two limits, both per source address: any login from one address (``per_address`` a minute), and one
    login from one address, free for ``free_failures`` wrong passwords, then with a doubling wait between
    attempts (up to ``max_wait`` seconds). Failures at other addresses never refuse this one, and a success
    clears the login's count at its address. In memory, per process."""

    def __init__(self, per_address: int = 30, free_failures: int = 5, max_wait: float = 900.0) -> None:
        self.by_address = RateLimiter(per_address, 60.0)
        self.free_failures = free_failures
        self.max_wait = max_wait
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def wait(self, ip: str, login: str, now: float | None = None) -> float:
        """Seconds until this login may be tried again from this address (0: now)."""
        now = time.monotonic() if now is None else now
        failures, last = self._failures.get((login, ip), (0, 0.0))
        if failures < self.free_failures:
            return 0.0
        delay = min(self.max_wait, 2.0 ** (failures - self.free_failures))
        return max(0.0, last + delay - now)

    def allow(self, ip: str, login: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.wait(ip, login, now) == 0.0 and self.by_address.allow(ip, now=now)

    def failed(self, ip: str, login: str, now: float | None = None) -> None:
        key = (login, ip)
        failures, _ = self._failures.pop(key, (0, 0.0))
        self._failures[key] = (failures + 1, time.monotonic() if now is None else now)
        while len(self._failures) > 100_000:
            self._failures.popitem(last=False)

    def succeeded(self, ip: str, login: str) -> None:
        self._failures.pop((login, ip), None)


THROTTLE = web.AppKey("throttle", LoginThrottle)
SESSION = web.RequestKey("session", Session)

OPEN_PATHS = {("GET", "/"), ("POST", "/login")}


def now() -> datetime:
    return datetime.now(UTC)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page and API needs a session; a POST needs the session's CSRF token too."""
    session = await request.app[USERS].session(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        request[SESSION] = session
    local = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
    local = local.removeprefix("/inbox") or "/"
    if session is None and (request.method, local) not in OPEN_PATHS:
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPFound("/inbox/")
        raise web.HTTPUnauthorized(text="Нужно войти в систему")
    if session is not None and request.method == "POST" and local != "/login":
        given = request.headers.get("X-CSRF-Token", "")
        if not given:
            form = await read_form(request)
            given = str(form.get("csrf", ""))
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            raise web.HTTPForbidden(text="Неверный токен CSRF: обновите страницу и повторите")
    response = await handler(request)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def session_of(request: web.Request) -> Session:
    session = request.get(SESSION)
    if session is None:
        raise web.HTTPUnauthorized(text="Нужно войти в систему")
    return session


def actor_of(request: web.Request) -> Actor:
    session = session_of(request)
    return Actor(session.user.login, session.user.name)


def require(request: web.Request, permission: str) -> Session:
    session = session_of(request)
    if not session.user.can(permission):
        raise web.HTTPForbidden(text="Недостаточно прав")
    return session


def page(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    session = request.get(SESSION)
    moment = now()
    settings = request.app[SETTINGS]
    base = {
        "session": session,
        "user": session.user if session else None,
        "csrf": session.csrf if session else "",
        "company": settings.company_name,
        "categories": CATEGORIES,
        "status_names": STATUS_NAMES,
        "channel_names": request.app[INBOX].channels.titles(),
        "role_names": ROLE_NAMES,
        "local": request.app[INBOX].texts.local,
        "short": lambda value: request.app[INBOX].texts.local_time(value, moment),
        "now": moment,
        "warn_minutes": settings.clock_warning_minutes,
        "clock_name": clock_name,
        "rubles": rubles,
    }
    return render(request, template, {**base, **context}, status=status)


def back(request: web.Request, fallback: str) -> web.HTTPSeeOther:
    target = request.headers.get("Referer", "")
    own = f"{request.scheme}://{request.host}/inbox"
    return web.HTTPSeeOther(target if target.startswith(own) else fallback)


# -- login -----------------------------------------------------------------------------


def login_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = page(request, "inbox/login.html", {"login_csrf": token, "error": error}, status=status)
    settings = request.app[SETTINGS]
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=settings.cookie_secure,
        path="/inbox",
        max_age=3600,
    )
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    given = str(form.get("csrf", ""))
    if not cookie or not hmac.compare_digest(given.encode(), cookie.encode()):
        return login_page(request, "Форма устарела, попробуйте ещё раз", status=403)
    name = str(form.get("login", "")).strip().lower()[:64]
    ip = request.remote or "?"
    throttle = request.app[THROTTLE]
    if not throttle.allow(ip, name):
        wait = max(1, int(throttle.wait(ip, name)) or 60)
        response = login_page(request, "Слишком много попыток входа с этого адреса. Подождите немного.", status=429)
        response.headers["Retry-After"] = str(wait)
        return response
    users = request.app[USERS]
    user = await users.authenticate(name, str(form.get("password", "")))
    if user is None:
        throttle.failed(ip, name)
        await users.record_failed_login(name, ip)
        return login_page(request, "Неверный логин или пароль", status=401)
    throttle.succeeded(ip, name)
    token, _ = await users.open_session(user, ip)
    response = web.HTTPSeeOther("/inbox/")
    settings = request.app[SETTINGS]
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="Lax", secure=settings.cookie_secure, path="/", max_age=12 * 3600
    )
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/inbox")
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[USERS].close_session(session_of(request))
    response = web.HTTPSeeOther("/inbox/")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


# -- the journal, reports, users, staff, dead letters -------------------------------------


def _filters(request: web.Request) -> dict[str, str]:
    keys = ("from", "to", "channel", "category", "status", "address", "breached")
    return {k: request.query.get(k, "")[:200] for k in keys if request.query.get(k)}


@routes.get("/journal")
async def journal_page(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    filters = _filters(request)
    newer = JournalKey.parse(request.query.get("before", "")[:64])
    at = newer or JournalKey.parse(request.query.get("after", "")[:64])
    too_broad = False
    try:
        found = await request.app[INBOX].desk.journal_page(
            JournalFilters(filters), request.app[SETTINGS].zone, at, PAGE_SIZE, newer=newer is not None
        )
    except QueryTooBroad:
        found, too_broad = JournalPage([], None, None), True
    return page(
        request,
        "inbox/journal.html",
        {
            "found": found,
            "requests": found.requests,
            "filters": filters,
            "paged": at is not None,
            "query_string": urlencode(filters),
            "statuses": STATUSES,
            "too_broad": too_broad,
            "journal_page_seconds": int(JOURNAL_PAGE_SECONDS),
        },
    )


@routes.get("/journal/export")
async def journal_export(request: web.Request) -> web.StreamResponse:
    """The journal as CSV or XLSX, streamed: rows are read and written a batch at a time, the spreadsheet
    work off the event loop, so a year's export neither fills the inbox's memory nor stalls other pages."""
    require(request, "inbox")
    settings = request.app[SETTINGS]
    inbox = request.app[INBOX]
    batches = inbox.desk.export_batches(JournalFilters(_filters(request)), settings.zone)
    titles = inbox.channels.titles()
    zone = settings.zone
    stamp = now().astimezone(zone).strftime("%Y%m%d-%H%M")

    def rows(batch: list[tuple[RequestDoc, ContactDoc | None]]) -> list[dict[str, Any]]:
        return [export_row(doc, zone, person) for doc, person in batch]

    def lines(batch: list[tuple[RequestDoc, ContactDoc | None]]) -> str:
        return csv_text(rows(batch), zone, titles)

    if request.query.get("format") == "csv":
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="journal-{stamp}.csv"',
            }
        )
        await response.prepare(request)
        await response.write(csv_text([], zone, titles, header=True).encode("utf-8"))
        async for batch in batches:
            text = await asyncio.to_thread(lines, batch)
            await response.write(text.encode("utf-8"))
        await response.write_eof()
        return response
    with tempfile.TemporaryFile() as spool:
        book = JournalWorkbook(spool, zone, titles)

        def add(batch: list[tuple[RequestDoc, ContactDoc | None]]) -> None:
            book.add(rows(batch))

        async for batch in batches:
            await asyncio.to_thread(add, batch)
        await asyncio.to_thread(book.close)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "Content-Disposition": f'attachment; filename="journal-{stamp}.xlsx"',
            }
        )
        response.content_length = spool.tell()
        spool.seek(0)
        await response.prepare(request)
        while chunk := await asyncio.to_thread(spool.read, EXPORT_CHUNK):
            await response.write(chunk)
        await response.write_eof()
        return response


@routes.get("/reports")
async def reports(request: web.Request) -> web.StreamResponse:
    require(request, "reports")
    settings = request.app[SETTINGS]
    filters = {k: v for k, v in _filters(request).items() if k in ("from", "to")}
    docs, tasks = await request.app[INBOX].desk.report_inputs(JournalFilters(filters), settings.zone)
    period = JournalFilters(filters).query(settings.zone).get("registered_at")
    bookings = await request.app[SCHEDULING].bookings.in_period(period)
    report = build_report(docs, tasks, settings.zone, bookings)
    return page(request, "inbox/reports.html", {"report": report, "filters": filters})


@routes.get("/users")
async def users_page(request: web.Request) -> web.StreamResponse:
    session = require(request, "users")
    users = request.app[USERS]
    admin = session.user.can("admin")
    return page(
        request,
        "inbox/users.html",
        {
            "users": await users.list(),
            "roles": [r for r in ROLES if rank(r) <= rank(session.user.role)],
            "rank": rank,
            "events": await users.recent_events() if admin else [],
            "failures": await users.recent_failed_logins() if admin else [],
            "action_names": ACTION_NAMES,
        },
    )


@routes.post("/users")
async def users_change(request: web.Request) -> web.StreamResponse:
    session = require(request, "users")
    form = await read_form(request)
    users = request.app[USERS]
    actor = session.user
    try:
        if form.get("disable"):
            await users.disable(str(form["disable"]), by=actor)
        elif form.get("enable"):
            await users.enable(str(form["enable"]), by=actor)
        elif form.get("change") == "role":
            await users.set_role(str(form.get("login", "")), str(form.get("role", "")), by=actor)
        else:
            await users.add(
                str(form.get("login", "")),
                str(form.get("password", "")),
                str(form.get("role", "dispatcher")),
                str(form.get("name", "")) or None,
                by=actor,
            )
    except Forbidden as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    except (InvalidInput, NotFound) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    raise web.HTTPSeeOther("/inbox/users")


@routes.get("/staff")
async def staff_page(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    inbox = request.app[INBOX]
    return page(
        request,
        "inbox/staff.html",
        {
            "staff": await inbox.staff(),
            "executor_channels": inbox.channels.executor_channels(configured_only=False),
            **staff_extras(),
        },
    )


def _hours(text: str) -> dict[str, list[list[str]]]:
    if not text.strip():
        return {}
    try:
        return hours_doc(parse_hours(text))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"Часы работы: {exc}") from None


@routes.post("/staff")
async def staff_change(request: web.Request) -> web.StreamResponse:
    require(request, "staff")
    form = await read_form(request)
    desk = request.app[INBOX].desk
    if form.get("deactivate"):
        await desk.deactivate_staff(str(form["deactivate"]))
        raise web.HTTPSeeOther("/inbox/staff")
    name = str(form.get("name", "")).strip()
    if not name:
        raise web.HTTPBadRequest(text="Укажите имя")
    person: dict[str, Any] = {
        "_id": secrets.token_hex(8),
        "name": name[:200],
        "trade": str(form.get("trade", ""))[:100],
        "hours": _hours(str(form.get("hours", ""))),
        "kind": "contractor" if form.get("kind") == "contractor" else "staff",
        "phone": str(form.get("phone", ""))[:40],
        "active": True,
        "created_at": now(),
    }
    for profile in request.app[INBOX].channels.executor_channels(configured_only=False):
        person[profile.name] = str(form.get(profile.name, "")).strip()[:320] or None
    await desk.add_staff(cast(StaffDoc, person))
    raise web.HTTPSeeOther("/inbox/staff")


@routes.get("/dead-letters")
async def dead_letters(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    return page(request, "inbox/dead_letters.html", {"dead": await request.app[INBOX].desk.dead_letters()})
