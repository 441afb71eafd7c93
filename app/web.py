"""The hub's aiohttp server, the aiohttp-demos way: ``init_app(settings, …)``, typed ``web.AppKey``s,
``cleanup_ctx`` for clients, an error middleware that renders templates, and security headers on every
response.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import jinja2
from aiohttp import web

from adshub.errors import ForgedInput, InvalidInput
from adshub.metrics import METRICS
from adshub.settings import Settings
from adshub.web import CSP, JINJA, SETTINGS, html_environment, render
from journal.repository import Journal
from templates import TEMPLATES_DIR

log = logging.getLogger("adshub.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CleanupContext = Callable[[web.Application], AsyncIterator[None]]

JOURNAL = web.AppKey("journal", Journal)
API_ROUTES = web.AppKey("api_routes", frozenset)
"""Routes that machines call (the channels' webhooks and sockets): their errors are JSON."""

JSON_PREFIXES = ("/api/", "/metrics")


def _wants_json(request: web.Request) -> bool:
    if "application/json" in request.headers.get("Accept", "") or request.path.startswith(JSON_PREFIXES):
        return True
    route = request.match_info.route
    return route in request.app.get(API_ROUTES, frozenset()) and "text/html" not in request.headers.get("Accept", "")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a clear page or JSON body; an unexpected one is logged, never leaked."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.empty_body:
            raise
        return _error_response(request, exc.status, exc.text or exc.reason, exc.headers)
    except ForgedInput as exc:
        log.warning("refused a forged request to %s from %s: %s", request.path, request.remote, exc)
        return _error_response(request, 403, "Доступ запрещён", None)
    except InvalidInput as exc:
        return _error_response(request, 400, str(exc), None)
    except (RecursionError, UnicodeDecodeError, OverflowError) as exc:
        log.warning("hostile input on %s %s refused: %s", request.method, request.path, type(exc).__name__)
        return _error_response(request, 400, "Запрос не распознан", None)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(request, 500, "Внутренняя ошибка сервера", None)


PLAIN_MESSAGES = {
    400: "Запрос не распознан",
    401: "Нужно войти в систему",
    403: "Доступ запрещён",
    404: "Страница не найдена",
    405: "Так эту страницу не открывают",
    413: "Слишком большой запрос",
    429: "Слишком много запросов, подождите немного",
}
"""What a person reads instead of the server's English defaults («404: Not Found»)."""


def _error_response(request: web.Request, status: int, message: str, headers: Any) -> web.Response:
    if re.fullmatch(r"\d{3}: [A-Za-z ]+", message or "") or not message:
        message = PLAIN_MESSAGES.get(status, "Ошибка")
    keep = {k: v for k, v in (headers or {}).items() if k.lower() in ("retry-after", "www-authenticate", "location")}
    if _wants_json(request):
        return web.json_response({"error": message, "status": status}, status=status, headers=keep)
    try:
        context = {"status": status, "message": message, "home": _home_of(request)}
        response = render(request, "errors/error.html", context, status=status)
    except jinja2.TemplateError:
        response = web.Response(text=f"{status}: {message}", status=status)
    response.headers.update(keep)
    return response


def _home_of(request: web.Request) -> str | None:
    """Where «На главную» leads: the inbox for its pages, the chat for the resident's, nowhere otherwise."""
    if request.path.startswith("/inbox"):
        return "/inbox/"
    if request.path.startswith("/chat"):
        return "/chat"
    return None


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response just before its headers go out: pages, errors, files and streams alike."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.content_type in ("text/html", "text/event-stream"):
        response.headers.setdefault("X-Frame-Options", "DENY")


UPLOAD_PATHS = ("/inbox/r/", "/crew/")
"""Only a signed-in dispatcher's photo report, or an executor's from the crew app (a personal link), may
exceed the ordinary body limit."""


def body_limit(limit: int, upload_limit: int) -> Any:
    """The limit is enforced while the body is read, so a chunked body without a length is cut off too."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        allowed = upload_limit if request.path.startswith(UPLOAD_PATHS) else limit
        if (request.content_length or 0) > allowed:
            raise web.HTTPRequestEntityTooLarge(max_size=allowed, actual_size=request.content_length or 0)
        return await handler(request.clone(client_max_size=allowed))

    return middleware


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=METRICS.render(), content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"}
    )


async def health(request: web.Request) -> web.Response:
    try:
        await request.app[JOURNAL].ping()
        db = "ok"
    except Exception as exc:
        db = f"unavailable: {type(exc).__name__}"
    status = 200 if db == "ok" else 503
    return web.json_response({"database": db}, status=status)


def init_app(
    settings: Settings,
    journal: Journal,
    api_routes: Sequence[web.AbstractRouteDef] = (),
    routes: Sequence[web.AbstractRouteDef] = (),
    cleanup: Sequence[CleanupContext] = (),
    subapps: Sequence[tuple[str, web.Application]] = (),
) -> web.Application:
    """The hub's server: /metrics, /healthz, static files, the channels' routes and the mounted apps."""
    upload_limit = max(settings.max_body_bytes, settings.max_attachment_bytes)
    app = web.Application(
        middlewares=[error_middleware, body_limit(settings.max_body_bytes, upload_limit)],
        client_max_size=upload_limit,
    )
    app.on_response_prepare.append(security_headers)
    app[SETTINGS] = settings
    app[JOURNAL] = journal
    app[JINJA] = html_environment()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    app.router.add_static("/static", TEMPLATES_DIR / "static", append_version=True)
    app[API_ROUTES] = frozenset(app.router.add_routes(list(api_routes)))
    app.router.add_routes(list(routes))
    for prefix, sub in subapps:
        sub[JINJA] = app[JINJA]
        sub[SETTINGS] = settings
        app.add_subapp(prefix, sub)
    app.cleanup_ctx.extend(cleanup)
    return app
