"""The dispatcher inbox: an aiohttp + jinja2 application mounted at /inbox.

Every page and API needs a session; strangers get the login form and nothing
else. Passwords are argon2-hashed, sessions live server-side behind an
HttpOnly cookie, every POST carries a CSRF token, login attempts are throttled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from adshub.web import Services
from bots.texts import Texts
from journal.inbox.actions import Inbox
from journal.inbox.live import EventHub
from journal.inbox.views import INBOX, LIVE, THROTTLE, USERS, LoginThrottle, auth_middleware, routes
from journal.users import Users
from router.deadlines import DeadlinePolicy


def init_inbox(settings: Any, services: Services) -> web.Application:
    app = web.Application(middlewares=[auth_middleware])
    texts = services.extra.get("texts") or Texts(settings.zone, settings.company_name, settings.company_phone)
    app[INBOX] = Inbox(services.journal, services.bus, texts, DeadlinePolicy.from_settings(settings), settings)
    app[USERS] = Users(services.journal)
    app[LIVE] = EventHub(services.bus)
    app[THROTTLE] = LoginThrottle()
    app.router.add_routes(routes)
    app.cleanup_ctx.append(_start_live)
    return app


async def _start_live(app: web.Application) -> AsyncIterator[None]:
    await app[USERS].prepare()
    await app[LIVE].start()
    yield
