"""What every web part of the hub shares: the settings and template keys of an aiohttp app, and rendering.

The app factory with its middlewares is the application's (``app.web``); pages of
the channels and of the inbox render through ``render`` so that they all get the
same environment, autoescaping and error pages.
"""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from adshub.errors import InvalidInput
from adshub.settings import Settings
from templates import TEMPLATES_DIR

SETTINGS = web.AppKey("settings", Settings)
JINJA = web.AppKey("jinja", jinja2.Environment)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def html_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"]),
        undefined=jinja2.ChainableUndefined,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """A posted form; a malformed body (a broken multipart, bytes that are not UTF-8) is ``InvalidInput``,
    an oversized one the 413 the body limit raises while reading."""
    try:
        return await request.post()
    except (ValueError, AssertionError, LookupError) as exc:
        raise InvalidInput("Форма не распознана") from exc


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    env = request.app[JINJA]
    body = env.get_template(template).render(**context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
