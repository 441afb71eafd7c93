"""The dispatcher inbox: an aiohttp + jinja2 application mounted at /inbox.

Every page and API needs a session; strangers get the login form and nothing
else. Passwords are argon2-hashed, sessions live server-side behind an
HttpOnly cookie, every POST carries a CSRF token, login attempts are throttled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from adshub.bus import Bus
from adshub.settings import Settings
from bots.texts import Texts
from domain.deadlines import DeadlinePolicy
from inbox.actions import ChannelDirectory, Inbox
from inbox.live import EventHub
from inbox.views import INBOX, LIVE, THROTTLE, USERS, LoginThrottle, auth_middleware, routes
from journal.repository import Journal
from journal.users import Users


def init_inbox(
    settings: Settings, journal: Journal, bus: Bus, texts: Texts, channels: ChannelDirectory
) -> web.Application:
    app = web.Application(middlewares=[auth_middleware])
    app[INBOX] = Inbox(journal, bus, texts, DeadlinePolicy.from_settings(settings), settings, channels)
    app[USERS] = Users(journal)
    app[LIVE] = EventHub(bus)
    app[THROTTLE] = LoginThrottle()
    app.router.add_routes(routes)
    app.cleanup_ctx.append(_start_live)
    app.on_shutdown.append(_close_live)
    return app


async def _start_live(app: web.Application) -> AsyncIterator[None]:
    await app[LIVE].start()
    yield


async def _close_live(app: web.Application) -> None:
    app[LIVE].close()
