"""The dispatcher inbox: an aiohttp + jinja2 application mounted at /inbox.

Every page and API needs a session; strangers get the login form and nothing
else. Passwords are argon2-hashed, sessions live server-side behind an
HttpOnly cookie, every POST carries a CSRF token, login attempts are throttled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from adshub.bus import Bus
from adshub.settings import Settings
from bots.texts import Texts
from domain.deadlines import DeadlinePolicy
from inbox.actions import ChannelDirectory, Inbox
from inbox.calendar import Scheduling
from inbox.crew import init_crew
from inbox.crew import routes as crew_routes
from inbox.crewbot import CrewBot
from inbox.live import EventHub
from inbox.views import CREWBOT, INBOX, LIVE, SCHEDULING, THROTTLE, USERS, LoginThrottle, auth_middleware, routes
from inbox.work import SEARCH
from inbox.work import routes as work_routes
from journal.repository import Journal
from journal.search import SearchIndex
from journal.users import Users

log = logging.getLogger("adshub.inbox")


def init_inbox(
    settings: Settings, journal: Journal, bus: Bus, texts: Texts, channels: ChannelDirectory
) -> web.Application:
    app = web.Application(middlewares=[auth_middleware])
    inbox = Inbox(journal, bus, texts, DeadlinePolicy.from_settings(settings), settings, channels)
    app[INBOX] = inbox
    app[USERS] = Users(journal)
    app[LIVE] = EventHub(bus, listeners=(inbox.board.noted,))
    app[THROTTLE] = LoginThrottle()
    app[SEARCH] = SearchIndex(journal)
    app[SCHEDULING] = Scheduling(inbox)
    app[CREWBOT] = CrewBot(app[SCHEDULING], bus)
    app.router.add_routes(crew_routes)
    app.router.add_routes(work_routes)
    app.router.add_routes(routes)
    app.cleanup_ctx.append(_start_live)
    app.cleanup_ctx.append(_start_crewbot)
    app.cleanup_ctx.append(_warm_search)
    app.on_shutdown.append(_close_live)
    return app


__all__ = ["init_crew", "init_inbox"]


async def _start_crewbot(app: web.Application) -> AsyncIterator[None]:
    await app[CREWBOT].start()
    yield


async def _start_live(app: web.Application) -> AsyncIterator[None]:
    await app[LIVE].start()
    yield


async def _warm_search(app: web.Application) -> AsyncIterator[None]:
    """Build the search index while nobody waits for it (16 s for 100,000 requests on the embedded server)."""

    async def warm() -> None:
        try:
            await app[SEARCH].refresh()
        except Exception as exc:
            log.warning("search index not built at start (%s); the first search builds it", exc)

    task = asyncio.create_task(warm(), name="search-warm-up")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_live(app: web.Application) -> None:
    app[LIVE].close()
    await app[INBOX].board.close()
