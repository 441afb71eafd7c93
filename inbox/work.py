"""The pages a dispatcher works from: the queues, a conversation, a request, search, a person's card, the
shift handover, canned replies; and the live stream that keeps them fresh.

A form that fails (closing without a result) comes back as the same page with the error on top and what
was typed still in its fields; photos already chosen are kept on the server and shown as attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from adshub.errors import InvalidInput, NotFound
from adshub.web import SETTINGS, read_form
from domain.categories import Category
from domain.paid import amount
from domain.schedule import CREW_STEPS, TRADES, slot_label
from inbox.actions import NOTICE_WAYS, STATUSES, TRANSITIONS, Actor, required_on_close
from inbox.calendar import info_reason
from inbox.rows import QUEUE_NAMES, QUEUES, display_name, nearest_clock, queue_counts
from inbox.views import (
    INBOX,
    LIVE,
    SCHEDULING,
    SESSION,
    USERS,
    actor_of,
    back,
    login_page,
    now,
    page,
    require,
    session_of,
)
from inbox.wording import audit_lines, in_lifecycle_order
from journal.documents import RequestDoc, UserDoc
from journal.search import SearchIndex

SEARCH = web.AppKey("search", SearchIndex)
PRESENCE_EVERY = 30.0
LIST_SHOWN = 100
"""Rows a queue shows before «показать все»: the nearest clocks come first, a page of 2,000 helps nobody."""
ON_SHIFT = timedelta(seconds=90)
routes = web.RouteTableDef()


async def _people(request: web.Request) -> dict[str, str]:
    return _names(await request.app[USERS].list())


def _names(users: list[UserDoc]) -> dict[str, str]:
    """Dispatchers' names by login, for the thread and the audit trail."""
    return {u["login"]: u.get("name") or u["login"] for u in users}


# -- the queues -------------------------------------------------------------------------------


async def _list_context(request: web.Request) -> dict[str, Any]:
    inbox = request.app[INBOX]
    me = session_of(request).user.login
    t = now()
    rows = await inbox.rows()
    queue = QUEUE_NAMES.get(request.query.get("q", "all"), QUEUES[0])
    queued = [r for r in rows if queue.holds(r, me, t)]
    shown = len(queued) if request.query.get("all") else LIST_SHOWN
    return {
        "rows": queued[:shown],
        "hidden": len(queued) - len(queued[:shown]),
        "show_all": bool(request.query.get("all")),
        "emergency_ids": [r.request["_id"] for r in queued if r.emergency and r.request],
        "queue": queue,
        "queues": QUEUES,
        "counts": queue_counts(rows, me, t),
        "tasks": await inbox.open_tasks(),
        "me": me,
    }


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    if request.get(SESSION) is None:
        return login_page(request)
    require(request, "inbox")
    return page(request, "inbox/list.html", await _list_context(request))


@routes.get("/partials/list")
async def list_partial(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    return page(request, "inbox/_list.html", await _list_context(request))


# -- live --------------------------------------------------------------------------------------


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    """The event stream; while it is open its dispatcher counts as on shift."""
    session = require(request, "inbox")
    desk = request.app[INBOX].desk
    user = session.user

    async def present() -> None:
        while True:
            with contextlib.suppress(Exception):
                await desk.mark_present(user.login, user.name, user.role, datetime.now(UTC))
            await asyncio.sleep(PRESENCE_EVERY)

    keeper = asyncio.create_task(present())
    try:
        return await request.app[LIVE].stream(request)
    finally:
        keeper.cancel()


# -- a conversation ---------------------------------------------------------------------------


async def _conversation_context(request: web.Request, conversation_id: str) -> dict[str, Any]:
    inbox = request.app[INBOX]
    try:
        view = await inbox.conversation(conversation_id)
    except NotFound:
        raise web.HTTPNotFound(text="Переписка не найдена") from None
    siblings = sorted({m.get("conversation_id") or conversation_id for m in view.messages} | {conversation_id})
    notes = await inbox.desk.thread_notes(siblings)
    thread: list[dict[str, Any]] = [{**m, "entry": "message"} for m in view.messages]
    thread.extend({**n, "entry": "note"} for n in notes)
    thread.sort(key=lambda e: e.get("at") or datetime.min.replace(tzinfo=UTC))
    profile = inbox.channels.profile(view.conversation.get("channel"))
    users = await request.app[USERS].list()
    return {
        **vars(view),
        "thread": thread,
        "people": _names(users),
        "nearest": lambda r: nearest_clock({}, r, inbox.policy.review),
        "name": display_name(view.conversation, view.contact),
        "profile": profile,
        "canned": await inbox.canned_replies(view.active),
        "colleagues": [u for u in users if not u.get("disabled")],
        **await _card_context(request, view.active),
    }


async def _card_context(request: web.Request, doc: RequestDoc | None = None) -> dict[str, Any]:
    inbox = request.app[INBOX]
    scheduling = request.app[SCHEDULING]
    open_request = doc is not None and doc.get("status") not in ("done", "cancelled")
    return {
        "booking": await scheduling.bookings.active_of_request(doc["_id"]) if doc is not None else None,
        "offers": await scheduling.offers(doc, now()) if doc is not None and open_request else [],
        "default_reason": info_reason(doc) if doc is not None else "",
        "trades": TRADES,
        "prices": await inbox.desk.prices() if doc is not None and _paid(doc) else [],
        "crew_steps": CREW_STEPS,
        "slot_label": lambda value: slot_label(value, now(), request.app[SETTINGS].zone),
        "staff": await inbox.staff(),
        "statuses": STATUSES,
        "transitions": {k: in_lifecycle_order(v) for k, v in TRANSITIONS.items()},
        "required_on_close": required_on_close,
        "municipal_text": inbox.municipal_notice_text,
        "municipal_mail": inbox.municipal_mail_ready(),
        "notice_ways": NOTICE_WAYS,
        "form": {},
        "error": None,
        "kept_photos": [],
    }


@routes.get("/c/{conversation}")
async def conversation(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    conversation_id = request.match_info["conversation"]
    await request.app[INBOX].mark_reviewed(conversation_id, actor_of(request), now())
    return page(request, "inbox/conversation.html", await _conversation_context(request, conversation_id))


@routes.get("/c/{conversation}/live")
async def conversation_live(request: web.Request) -> web.StreamResponse:
    """The parts of the conversation page that change: the thread, the header and the request card."""
    require(request, "inbox")
    conversation_id = request.match_info["conversation"]
    await request.app[INBOX].mark_reviewed(conversation_id, actor_of(request), now())
    return page(request, "inbox/_conversation_live.html", await _conversation_context(request, conversation_id))


@routes.post("/c/{conversation}/{action}")
async def conversation_action(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    inbox = request.app[INBOX]
    conversation_id = request.match_info["conversation"]
    action = request.match_info["action"]
    form = await read_form(request)
    actor = actor_of(request)
    t = now()
    try:
        if action == "reply":
            files = await _uploads(request, form, "files", conversation_id, images_only=False)
            await inbox.reply(conversation_id, str(form.get("text", "")), actor, t, files=files)
        elif action == "note":
            await inbox.add_thread_note(conversation_id, str(form.get("text", "")), actor, t)
        elif action == "take":
            if not await inbox.take(conversation_id, actor, t):
                raise InvalidInput("Переписку уже ведёт другой диспетчер: попросите передать её вам")
        elif action == "release":
            await inbox.release(conversation_id, actor, t)
        elif action == "handover":
            login = str(form.get("to", ""))
            user = await request.app[USERS].get(login) if login else None
            if user is None:
                raise InvalidInput("Выберите, кому передать переписку")
            await inbox.hand_over(conversation_id, Actor(user.login, user.name), actor, t)
        else:
            raise web.HTTPNotFound(text="Неизвестное действие")
    except InvalidInput as exc:
        context = await _conversation_context(request, conversation_id)
        context.update(error=str(exc), form=_form_values(form))
        return page(request, "inbox/conversation.html", context, status=400)
    except NotFound:
        raise web.HTTPNotFound(text="Переписка не найдена") from None
    raise web.HTTPSeeOther(f"/inbox/c/{conversation_id}")


# -- a request --------------------------------------------------------------------------------


async def _request_context(request: web.Request, number: str) -> dict[str, Any]:
    inbox = request.app[INBOX]
    try:
        doc, audit = await inbox.request(number)
    except NotFound:
        raise web.HTTPNotFound(text="Заявка не найдена") from None
    incident: dict[str, Any] | None = None
    found = await inbox.desk.incident(doc.get("incident_id") or "") if doc.get("incident_id") else None
    if found is not None:
        incident = {**found, "reporters": await inbox.journal.incident_reporters(found["_id"])}
    return {
        "request": doc,
        "audit": audit_lines(list(audit), inbox.texts.local, await _people(request), inbox.channels.titles()),
        "incident": incident,
        **await _card_context(request, doc),
    }


@routes.get("/r/{number}")
async def request_page(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    return page(request, "inbox/request.html", await _request_context(request, request.match_info["number"]))


def _paid(doc: RequestDoc) -> bool:
    return doc.get("category") == Category.PAID_SERVICE.value or bool(doc.get("paid"))


@routes.get("/r/{number}/act")
async def act_page(request: web.Request) -> web.StreamResponse:
    """The act of completed works: what was done, the paid works and materials, the total; for printing."""
    require(request, "inbox")
    context = await _request_context(request, request.match_info["number"])
    return page(request, "inbox/act.html", context)


@routes.get("/prices")
async def prices_page(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    return page(request, "inbox/prices.html", {"prices": await request.app[INBOX].desk.prices()})


@routes.post("/prices")
async def prices_change(request: web.Request) -> web.StreamResponse:
    require(request, "staff")
    form = await read_form(request)
    desk = request.app[INBOX].desk
    if form.get("remove"):
        await desk.remove_price(str(form["remove"]))
        raise web.HTTPSeeOther("/inbox/prices")
    name = str(form.get("name", "")).strip()[:200]
    try:
        price = amount(str(form.get("price", "")))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"Цена: {exc}") from None
    if not name:
        raise web.HTTPBadRequest(text="Укажите название работы")
    unit = str(form.get("unit", "")).strip()[:20] or "шт"
    await desk.add_price({"_id": secrets.token_hex(8), "name": name, "unit": unit, "price": str(price), "active": True})
    raise web.HTTPSeeOther("/inbox/prices")


@routes.get("/r/{number}/live")
async def request_live(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    return page(request, "inbox/_request_live.html", await _request_context(request, request.match_info["number"]))


def _datetime(value: str, request: web.Request) -> datetime:
    try:
        local = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput("Дата и время в формате ГГГГ-ММ-ДДTЧЧ:ММ") from None
    if not 2000 <= local.year <= 2100:
        raise InvalidInput("Дата вне допустимого диапазона")
    tz = request.app[SETTINGS].zone
    return (local if local.tzinfo else local.replace(tzinfo=tz)).astimezone(UTC)


async def _uploads(
    request: web.Request, form: MultiDictProxy[Any], field: str, owner: str, images_only: bool
) -> list[dict[str, Any]]:
    """Files of a form field, kept in the journal: ``{"ref", "name", "content_type", "size"}`` each."""
    inbox = request.app[INBOX]
    limit = request.app[SETTINGS].max_attachment_bytes
    stored: list[dict[str, Any]] = []
    for item in form.getall(field, []):
        if isinstance(item, str) or not getattr(item, "filename", None):
            continue
        data = item.file.read(limit + 1)
        if not data:
            continue
        if len(data) > limit:
            raise InvalidInput(f"Файл «{item.filename}» слишком большой")
        content_type = item.content_type or "application/octet-stream"
        if images_only and not content_type.startswith("image/"):
            raise InvalidInput("Фотоотчёт: только изображения")
        name = str(item.filename)[:200]
        ref = await inbox.journal.store_file(data, name, content_type, {"owner": owner, "kind": field})
        stored.append({"ref": ref, "name": name, "content_type": content_type, "size": len(data)})
    return stored


def _form_values(form: MultiDictProxy[Any]) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}


@routes.post("/r/{number}/{action}")
async def request_action(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    inbox = request.app[INBOX]
    number = request.match_info["number"]
    action = request.match_info["action"]
    form = await read_form(request)
    actor = actor_of(request)
    t = now()
    kept: list[dict[str, Any]] = []
    try:
        if action == "category":
            emergency = form.get("emergency")
            await inbox.change_category(
                number, str(form.get("category", "")), None if emergency is None else emergency == "yes", actor, t
            )
        elif action == "address":
            await inbox.set_address(number, str(form.get("address", "")), actor, t)
        elif action == "assign":
            staff_id = str(form.get("staff", ""))
            if not staff_id:
                raise InvalidInput("Выберите исполнителя")
            await inbox.assign(number, staff_id, actor, t)
        elif action == "visit":
            staff_id = str(form.get("staff", ""))
            if not staff_id:
                raise InvalidInput("Выберите сотрудника, который придёт")
            await inbox.plan_visit(
                number, _datetime(str(form.get("at", "")), request), str(form.get("reason", "")), staff_id, actor, t
            )
        elif action == "book":
            staff_id = str(form.get("staff", ""))
            if not staff_id:
                raise InvalidInput("Выберите исполнителя")
            start = _datetime(str(form.get("start", "")), request)
            await request.app[SCHEDULING].book(number, staff_id, start, str(form.get("reason", "")), actor, t)
        elif action == "price":
            quantities = {
                k.removeprefix("qty:"): str(v) for k, v in form.items() if k.startswith("qty:") and isinstance(v, str)
            }
            await inbox.agree_price(number, quantities, actor, t)
        elif action == "unbook":
            await request.app[SCHEDULING].cancel(number, actor, t)
        elif action == "note":
            await inbox.add_note(number, str(form.get("text", "")), actor, t)
        elif action == "status":
            status = str(form.get("status", ""))
            result = None
            kept = [
                {"ref": r} for r in form.getall("kept_photos", []) if isinstance(r, str) and r.startswith("gridfs:")
            ]
            kept += await _uploads(request, form, "photos", number, images_only=True)
            if status == "done":
                result = {
                    "result": str(form.get("result", "")).strip(),
                    "materials": str(form.get("materials", "")).strip(),
                    "photos": [k["ref"] for k in kept],
                }
            await inbox.set_status(number, status, actor, t, result)
        elif action == "clock":
            await inbox.complete_clock(number, str(form.get("clock", "")), actor, t)
        elif action == "notice":
            await inbox.send_municipal_notice(number, str(form.get("text", "")), actor, t)
        elif action == "notice-made":
            when = str(form.get("at", "")).strip()
            await inbox.record_municipal_notice(
                number,
                str(form.get("way", "")),
                str(form.get("to", "")),
                str(form.get("text", "")),
                actor,
                t,
                at=_datetime(when, request) if when else None,
            )
        else:
            raise web.HTTPNotFound(text="Неизвестное действие")
    except InvalidInput as exc:
        return await _failed_form(request, number, str(exc), form, kept)
    except NotFound:
        raise web.HTTPNotFound(text="Заявка не найдена") from None
    raise back(request, f"/inbox/r/{number}")


async def _failed_form(
    request: web.Request, number: str, error: str, form: MultiDictProxy[Any], kept: list[dict[str, Any]]
) -> web.Response:
    """The page the form came from, with the error and the values typed, status 400."""
    values = _form_values(form)
    conversation_id = values.get("from_conversation", "")
    if conversation_id:
        context = await _conversation_context(request, conversation_id)
        template = "inbox/conversation.html"
    else:
        context = await _request_context(request, number)
        template = "inbox/request.html"
    context.update(error=error, form=values, kept_photos=kept, failed_action=request.match_info["action"])
    return page(request, template, context, status=400)


@routes.post("/tasks/{task}/done")
async def task_done(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    form = await read_form(request)
    try:
        await request.app[INBOX].complete_task(
            request.match_info["task"], actor_of(request), now(), str(form.get("note", ""))
        )
    except NotFound:
        raise web.HTTPNotFound(text="Задача не найдена") from None
    raise back(request, "/inbox/")


@routes.get("/files/{reference}")
async def file(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    found = await request.app[INBOX].journal.read_file(request.match_info["reference"])
    if found is None:
        raise web.HTTPNotFound(text="Файл не найден")
    data, stored_type, _name = found
    content_type = stored_type.split(";")[0].strip().lower() or "application/octet-stream"
    inline = content_type.startswith(("image/", "audio/"))
    disposition = "inline" if inline else "attachment"
    return web.Response(
        body=data,
        content_type=content_type if inline else "application/octet-stream",
        headers={
            "Content-Disposition": f'{disposition}; filename="file"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


# -- search -----------------------------------------------------------------------------------


@routes.get("/search")
async def search(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    query = request.query.get("q", "")[:200]
    result = await request.app[SEARCH].search(query) if query.strip() else None
    return page(request, "inbox/search.html", {"query": query, "result": result})


# -- a person ---------------------------------------------------------------------------------


async def _person_context(request: web.Request, contact_id: str) -> dict[str, Any]:
    inbox = request.app[INBOX]
    try:
        view = await inbox.person(contact_id)
    except NotFound:
        raise web.HTTPNotFound(text="Карточка жителя не найдена") from None
    people = await _people(request)
    candidates = []
    query = request.query.get("merge", "")[:200]
    if query.strip():
        found = await request.app[SEARCH].search(query, limit=20)
        seen = {contact_id}
        for doc in found.requests:
            other = doc.get("contact_id")
            if other and other not in seen:
                seen.add(other)
                candidates.append({"id": other, "name": (doc.get("contact") or {}).get("name"), "request": doc})
    return {
        **vars(view),
        "name": display_name({"title": None, "address": None, "channel": None}, view.contact),
        "history": audit_lines([dict(e) for e in view.events], inbox.texts.local, people, inbox.channels.titles()),
        "merge_query": query,
        "candidates": candidates,
        "form": {},
        "error": None,
    }


@routes.get("/p/{contact}")
async def person(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    return page(request, "inbox/person.html", await _person_context(request, request.match_info["contact"]))


@routes.post("/p/{contact}/{action}")
async def person_action(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    inbox = request.app[INBOX]
    contact_id = request.match_info["contact"]
    form = await read_form(request)
    actor, t = actor_of(request), now()
    try:
        if request.match_info["action"] == "edit":
            await inbox.edit_person(
                contact_id,
                str(form.get("name", "")),
                str(form.get("phones", "")),
                str(form.get("emails", "")),
                actor,
                t,
            )
        elif request.match_info["action"] == "merge":
            await inbox.merge_people(contact_id, str(form.get("other", "")), actor, t)
        else:
            raise web.HTTPNotFound(text="Неизвестное действие")
    except InvalidInput as exc:
        context = await _person_context(request, contact_id)
        context.update(error=str(exc), form=_form_values(form))
        return page(request, "inbox/person.html", context, status=400)
    except NotFound:
        raise web.HTTPNotFound(text="Карточка жителя не найдена") from None
    raise web.HTTPSeeOther(f"/inbox/p/{contact_id}")


# -- the shift --------------------------------------------------------------------------------


@routes.get("/shift")
async def shift(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    inbox = request.app[INBOX]
    t = now()
    open_requests = await inbox.desk.open_requests()
    soon = t + timedelta(hours=2)
    breaking = []
    for r in open_requests:
        due = _next_open_due(r)
        if due is not None and due <= soon:
            breaking.append(r)
    return page(
        request,
        "inbox/shift.html",
        {
            "open_requests": open_requests,
            "breaking": breaking,
            "next_due": _next_open_due,
            "notes": await inbox.desk.shift_notes(),
            "present": await inbox.desk.present(t - ON_SHIFT),
            "tasks": await inbox.open_tasks(),
        },
    )


def _next_open_due(request: Mapping[str, Any]) -> datetime | None:
    times = [
        c["due_at"] for c in (request.get("clocks") or {}).values() if c.get("done_at") is None and c.get("due_at")
    ]
    return min(times) if times else None


@routes.post("/shift/note")
async def shift_note(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    form = await read_form(request)
    try:
        await request.app[INBOX].add_shift_note(str(form.get("text", "")), actor_of(request), now())
    except InvalidInput as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    raise web.HTTPSeeOther("/inbox/shift")


# -- canned replies ---------------------------------------------------------------------------


@routes.get("/canned")
async def canned(request: web.Request) -> web.StreamResponse:
    require(request, "inbox")
    return page(request, "inbox/canned.html", {"replies": await request.app[INBOX].desk.canned_replies()})


@routes.post("/canned")
async def canned_change(request: web.Request) -> web.StreamResponse:
    session = require(request, "staff")
    form = await read_form(request)
    desk = request.app[INBOX].desk
    if form.get("delete"):
        await desk.delete_canned_reply(str(form["delete"]))
        raise web.HTTPSeeOther("/inbox/canned")
    title, text = str(form.get("title", "")).strip(), str(form.get("text", "")).strip()
    if not title or not text:
        raise web.HTTPBadRequest(text="Нужны название и текст шаблона")
    await desk.add_canned_reply(
        {
            "_id": secrets.token_hex(8),
            "title": title[:100],
            "text": text[:4000],
            "created_by": session.user.login,
            "created_at": now(),
        }
    )
    raise web.HTTPSeeOther("/inbox/canned")
