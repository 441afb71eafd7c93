"""The executors' side: the calendar of a trade and booking from the request card (inbox routes), and the
crew app — a phone page opened by a personal link, mounted at /crew.

The personal link is the executor's key: whoever holds it acts as that executor, so it is long, random,
kept only as a hash, and replaced (the old one stops working) whenever a dispatcher issues a new one.
The app's buttons carry an id made once per press; a press queued while the phone had no network and sent
twice is applied once.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from adshub.errors import InvalidInput, NotFound
from adshub.web import SETTINGS, read_form, render
from bots.texts import STATUS_NAMES
from domain.categories import CATEGORIES
from domain.schedule import CREW_STEPS, EXCEPTION_KINDS, TRADES, hours_doc, parse_hours, span_text
from inbox.actions import required_on_close
from inbox.calendar import Scheduling, ics_feed
from inbox.views import CREWBOT, INBOX, SCHEDULING, now, page, require
from inbox.work import _uploads

routes = web.RouteTableDef()
crew_routes = web.RouteTableDef()

ACTION_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")


# -- inbox: the calendar, booking, the staff's hours ------------------------------------------------


@routes.get("/calendar")
async def calendar_page(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    scheduling = request.app[SCHEDULING]
    zone = request.app[SETTINGS].zone
    try:
        day = datetime.fromisoformat(request.query["day"]).replace(tzinfo=zone) if request.query.get("day") else now()
    except ValueError:
        day = now()
    days = 7 if request.query.get("view") == "week" else 1
    trade = request.query.get("trade", "")
    context = await scheduling.calendar(trade if trade in TRADES else "", day, days)
    first = context["dates"][0]
    context.update(
        view="week" if days == 7 else "day",
        previous=(first - timedelta(days=days)).isoformat(),
        following=(first + timedelta(days=days)).isoformat(),
        today=now().astimezone(zone).date(),
        span_text=lambda start, end: span_text(start, end, zone),
    )
    return page(request, "inbox/calendar.html", context)


@routes.post("/staff/{staff}/hours")
async def staff_hours(request: web.Request) -> web.StreamResponse:
    require(request, "staff")
    form = await read_form(request)
    inbox = request.app[INBOX]
    staff_id = request.match_info["staff"]
    fields: dict[str, Any] = {}
    try:
        fields["hours"] = hours_doc(parse_hours(str(form.get("hours", ""))))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"Часы работы: {exc}") from None
    trade = str(form.get("trade", ""))
    if trade in TRADES:
        fields["trade"] = trade
    fields["buildings"] = [b.strip() for b in str(form.get("buildings", "")).split(",") if b.strip()][:500]
    absences = []
    for line in str(form.get("absences", "")).splitlines():
        found = re.match(r"\s*(\d{4}-\d{2}-\d{2})\s*(?:[-–—]|по)?\s*(\d{4}-\d{2}-\d{2})?\s+(\w+)(.*)", line)
        if not found:
            continue
        kind = next((k for k, v in EXCEPTION_KINDS.items() if v.startswith(found.group(3).lower()[:4])), "off")
        hours = []
        if kind == "shift":
            try:
                hours = hours_doc(parse_hours("пн " + found.group(4))).get("0", [])
            except ValueError:
                hours = []
        absences.append(
            {"first": found.group(1), "last": found.group(2) or found.group(1), "kind": kind, "hours": hours}
        )
    fields["absences"] = absences
    await inbox.desk.update_staff(staff_id, fields)
    raise web.HTTPSeeOther("/inbox/staff")


@routes.post("/staff/{staff}/link")
async def staff_link(request: web.Request) -> web.StreamResponse:
    require(request, "staff")
    try:
        token = await request.app[SCHEDULING].issue_link(request.match_info["staff"])
    except NotFound:
        raise web.HTTPNotFound(text="Сотрудник не найден") from None
    person = await request.app[INBOX].desk.person(request.match_info["staff"])
    code = await request.app[CREWBOT].issue_code(request.match_info["staff"], now())
    base = request.app[SETTINGS].public_url or f"{request.scheme}://{request.host}"
    return page(
        request,
        "inbox/crew_link.html",
        {
            "person": person,
            "link": f"{base}/crew/{token}",
            "telegram_command": f"/start crew-{code}",
            "telegram_link": request.app[INBOX].channels.start_link("telegram", f"crew-{code}"),
        },
    )


# -- the crew app --------------------------------------------------------------------------------


CREW = web.AppKey("crew_scheduling", Scheduling)


async def _executor(request: web.Request) -> Any:
    person = await request.app[CREW].executor(request.match_info["token"])
    if person is None:
        raise web.HTTPNotFound(text="Ссылка не действует: попросите диспетчера прислать новую")
    return person


@crew_routes.get("/{token}")
async def crew_home(request: web.Request) -> web.StreamResponse:
    person = await _executor(request)
    scheduling = request.app[CREW]
    jobs = await scheduling.jobs(person, now())
    return render(
        request,
        "crew/jobs.html",
        {
            "person": person,
            "jobs": jobs,
            "steps": CREW_STEPS,
            "token": request.match_info["token"],
            "local": scheduling.inbox.texts.local,
            "categories": CATEGORIES,
            "status_names": STATUS_NAMES,
            "required_on_close": required_on_close,
            "new_id": lambda: uuid.uuid4().hex,
            "company": request.app[SETTINGS].company_name,
            "error": request.query.get("error"),
        },
    )


@crew_routes.post("/{token}/jobs/{number}")
async def crew_step(request: web.Request) -> web.StreamResponse:
    person = await _executor(request)
    origin = request.headers.get("Origin")
    if origin and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden(text="Чужой источник запроса")
    form = await read_form(request)
    number = request.match_info["number"]
    action_id = str(form.get("action_id", ""))
    wants_json = "application/json" in request.headers.get("Accept", "")
    if not ACTION_ID.match(action_id):
        raise web.HTTPBadRequest(text="Нет идентификатора действия")
    step = str(form.get("step", ""))
    result = None
    try:
        if step == "done":
            photos = await _uploads(request, form, "photos", number, images_only=True)
            result = {
                "result": str(form.get("result", "")).strip(),
                "materials": str(form.get("materials", "")).strip(),
                "photos": [p["ref"] for p in photos],
            }
        applied = await request.app[CREW].crew_step(person, number, step, action_id, now(), result)
    except InvalidInput as exc:
        if wants_json:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        raise web.HTTPSeeOther(f"/crew/{request.match_info['token']}?error={_quote(str(exc))}") from None
    except NotFound:
        raise web.HTTPNotFound(text="Эта заявка не ваша или её нет") from None
    if wants_json:
        return web.json_response({"ok": True, "repeated": not applied})
    raise web.HTTPSeeOther(f"/crew/{request.match_info['token']}")


def _quote(text: str) -> str:
    return quote(text[:300])


@crew_routes.get("/{token}/calendar.ics")
async def crew_calendar(request: web.Request) -> web.StreamResponse:
    person = await _executor(request)
    scheduling = request.app[CREW]
    start = now() - timedelta(days=7)
    bookings = await scheduling.bookings.of_staff(person["_id"], start, start + timedelta(days=60))
    requests = await scheduling.inbox.desk.requests_of([b["request_number"] for b in bookings])
    body = ics_feed(person, bookings, requests, request.app[SETTINGS].company_name)
    return web.Response(
        body=body.encode(), content_type="text/calendar", charset="utf-8", headers={"Cache-Control": "no-store"}
    )


def init_crew(inbox_app: web.Application) -> web.Application:
    """The crew app, sharing the inbox's scheduling (one journal client, one bus)."""
    app = web.Application()
    app[CREW] = inbox_app[SCHEDULING]
    app[INBOX] = inbox_app[INBOX]
    app.router.add_routes(crew_routes)
    return app
