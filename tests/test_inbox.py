"""The dispatcher inbox over HTTP: access, the unified inbox, answers, the request card, the journal and reports."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import aiohttp
import openpyxl

from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from journal.repository import Journal
from tests.helpers import REPO, Dispatcher, register_from_chat, visible_text, wait_for
from tests.mailservers import SmtpSink


async def test_strangers_see_only_the_login_form(inbox_hub: Hub) -> None:
    client = Dispatcher(f"http://127.0.0.1:{inbox_hub.port}")
    try:
        status, page = await client.get("/inbox/")
        assert status == 200 and "Вход для диспетчеров" in page and "conversations" not in page
        for path in ("/inbox/journal", "/inbox/reports", "/inbox/c/webchat:x", "/inbox/r/2026-000001"):
            async with client.http.get(client.base + path, headers={"Accept": "text/html"}, allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/inbox/"
        for path in ("/inbox/events", "/inbox/partials/list", "/inbox/files/gridfs:abc", "/inbox/journal/export"):
            async with client.http.get(client.base + path) as r:
                assert r.status == 401
        status, _ = await client.post("/inbox/c/webchat:x/reply", {"text": "hi", "csrf": "x"}, csrf=False)
        assert status == 401
    finally:
        await client.close()


async def test_wrong_password_is_refused_and_attempts_are_throttled(inbox_hub: Hub) -> None:
    client = Dispatcher(f"http://127.0.0.1:{inbox_hub.port}")
    try:
        status, page = await client.login("anna", "wrong-password")
        assert status == 401 and "Неверный логин или пароль" in page
        assert "adshub_session" not in {c.key for c in client.http.cookie_jar}
        statuses = [(await client.login("anna", "wrong-password"))[0] for _ in range(6)]
        assert 429 in statuses
    finally:
        await client.close()


async def test_session_cookie_is_httponly_and_posts_need_csrf(anna: Dispatcher, inbox_hub: Hub) -> None:
    cookie = next(c for c in anna.http.cookie_jar if c.key == "adshub_session")
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    chat, number = await register_from_chat(inbox_hub, "csrf-session-1", "Прорвало трубу, Ленина 5 кв 1")
    await chat.http.close()
    status, _ = await anna.post(f"/inbox/r/{number}/note", {"text": "без токена"}, csrf=False)
    assert status == 403
    status, _ = await anna.post(f"/inbox/r/{number}/note", {"text": "с чужим токеном", "csrf": "forged"}, csrf=False)
    assert status == 403
    status, page = await anna.post(f"/inbox/r/{number}/note", {"text": "с токеном"})
    assert status == 200 and "с токеном" in page


async def test_inbox_lists_conversations_by_urgency_and_the_reply_reaches_the_resident(
    anna: Dispatcher, inbox_hub: Hub
) -> None:
    quiet, _ = await register_from_chat(inbox_hub, "resident-quiet", "Подскажите реквизиты для оплаты")
    urgent, number = await register_from_chat(inbox_hub, "resident-urgent", "Пахнет газом в подъезде, Кирова 6")
    _, listing = await anna.get("/inbox/partials/list")
    assert listing.index("resident-urgent") < listing.index("resident-quiet")
    assert 'class="row-item emergency unread' in listing and "Житель без имени" in listing

    status, page = await anna.get("/inbox/c/webchat:resident-urgent")
    assert status == 200 and "Пахнет газом в подъезде" in page and f"Заявка № {number}" in page
    status, _ = await anna.post(
        "/inbox/c/webchat:resident-urgent/reply", {"text": "Бригада выехала, будет через 15 минут"}
    )
    assert status == 200
    frame = await urgent.receive_type("message")
    assert frame["from"] == "dispatcher" and frame["text"] == "Бригада выехала, будет через 15 минут"
    j = inbox_hub.journal
    assert j is not None
    answer = await j.messages.find_one({"author": "anna"})
    sent = await wait_for(lambda: j.deliveries.find_one({"_id": answer["_id"], "status": "sent"}))
    assert sent["channel"] == "webchat"
    request = await j.request(number)
    assert request["clocks"]["review"]["met"] is True and request["clocks"]["review"]["by"] == "anna"
    for chat in (quiet, urgent):
        await chat.http.close()


async def test_category_change_is_audited_recomputes_deadlines_and_keeps_a_labeled_example(
    anna: Dispatcher, inbox_hub: Hub
) -> None:
    chat, number = await register_from_chat(inbox_hub, "resident-cat", "Лифт не работает, Мира 15 подъезд 2")
    await chat.http.close()
    j = inbox_hub.journal
    assert j is not None
    await wait_for(lambda: j.inform_times([number]))
    before = (await j.with_inform([await j.request(number)]))[0]
    assert before["category"] == "elevator_fault" and "eliminate" in before["clocks"]
    status, _ = await anna.post(f"/inbox/r/{number}/category", {"category": "elevator_trapped", "emergency": "yes"})
    assert status == 200
    after = await j.request(number)
    assert after["category"] == "elevator_trapped" and after["emergency"] is True
    assert "handoff" in after["clocks"] and "eliminate" not in after["clocks"]
    after = (await j.with_inform([after]))[0]
    assert after["clocks"]["inform"]["done_at"] == before["clocks"]["inform"]["done_at"]
    audit = await j.audit.find_one({"request": number, "action": "category"})
    assert audit["actor"] == "dispatcher:anna" and audit["changes"]["category"] == [
        "elevator_fault",
        "elevator_trapped",
    ]
    correction = await j.corrections.find_one({"request": number})
    assert correction["category"] == "elevator_trapped" and correction["previous"]["category"] == "elevator_fault"
    labeled = [row for row in await j.labeled_corrections() if row["text"] == correction["text"]]
    assert labeled == [{"text": correction["text"], "category": "elevator_trapped", "emergency": True}]
    _, page = await anna.get(f"/inbox/r/{number}")
    assert "Журнал изменений" in page and "Анна Диспетчер" in page and "Изменена категория" in page
    assert "категория: Неисправность лифта → Застревание людей в лифте" in page
    shown = visible_text(page)
    assert "dispatcher:anna" not in shown and "elevator_" not in shown and "{'" not in shown


async def test_closing_needs_the_result_and_sends_the_survey(anna: Dispatcher, inbox_hub: Hub) -> None:
    chat, number = await register_from_chat(inbox_hub, "resident-close", "Течёт батарея в комнате, Гоголя 14 кв 6")
    status, page = await anna.post(f"/inbox/r/{number}/status", {"status": "done", "result": "Заменена прокладка"})
    assert status == 400 and "материалы" in page
    assert (await anna.post(f"/inbox/r/{number}/assign", {"staff": "s1"}))[0] == 200
    assert (await anna.post(f"/inbox/r/{number}/status", {"status": "localized"}))[0] == 200
    form = aiohttp.FormData()
    form.add_field("csrf", anna.csrf)
    form.add_field("status", "done")
    form.add_field("result", "Заменена прокладка радиатора")
    form.add_field("materials", "прокладка 1/2")
    form.add_field("photos", b"\xff\xd8\xff\xe0photo", filename="after.jpg", content_type="image/jpeg")
    status, _ = await anna.post(f"/inbox/r/{number}/status", form)
    assert status == 200
    j = inbox_hub.journal
    assert j is not None
    done = await j.request(number)
    assert done["status"] == "done" and done["closed_at"] and done["result"]["materials"] == "прокладка 1/2"
    assert done["result"]["photos"][0].startswith("gridfs:")
    assert done["clocks"]["localize"]["done_at"] and done["clocks"]["eliminate"]["met"] is True
    survey = await chat.receive_type("message")
    while "Оцените" not in survey["text"]:
        survey = await chat.receive_type("message")
    assert [b["data"] for b in survey["buttons"][0]] == [f"survey:{number}:{r}" for r in range(1, 6)]
    await chat.send("rate", "5")
    await chat.receive_type("message")
    rated = await wait_for(lambda: j.requests.find_one({"_id": number, "survey.rating": 5}))
    assert rated is not None
    await chat.http.close()


async def test_visit_tells_the_resident_when_why_and_who(anna: Dispatcher, inbox_hub: Hub) -> None:
    chat, number = await register_from_chat(inbox_hub, "resident-visit", "Сверху заливают, Садовая 3 кв 62")
    status, _ = await anna.post(
        f"/inbox/r/{number}/visit", {"at": "2026-11-25T10:30", "staff": "s1", "reason": "осмотр стояка в санузле"}
    )
    assert status == 200
    notice = await chat.receive_type("message")
    while "доступ" not in notice["text"]:
        notice = await chat.receive_type("message")
    assert "Пётр Сантехник" in notice["text"] and "25.11.2026 10:30" in notice["text"]
    assert "осмотр стояка в санузле" in notice["text"]
    await chat.http.close()


async def test_municipal_notice_is_confirmed_and_sent_by_email(
    anna: Dispatcher, inbox_hub: Hub, smtp: SmtpSink
) -> None:
    chat, number = await register_from_chat(
        inbox_hub, "resident-muni", "В подвале прорвало трубу холодной воды, Лесная 4"
    )
    await chat.http.close()
    _, page = await anna.get(f"/inbox/r/{number}")
    assert "Уведомление органа местного самоуправления" in page and "Характер повреждения" in page
    status, _ = await anna.post(f"/inbox/r/{number}/notice", {"text": "Авария ХВС в подвале, ул. Лесная, д. 4"})
    assert status == 200
    letter = (await wait_for(lambda: [m for m in smtp.messages if m["To"] == "adm@city.example"]))[0]
    assert number in letter["Subject"] and "Лесная" in letter.get_content()
    j = inbox_hub.journal
    assert j is not None
    assert (await j.request(number))["municipal_notice"]["status"] == "sent"
    assert await j.audit.find_one({"request": number, "action": "municipal_notice"})


async def test_hostile_html_is_shown_as_text(anna: Dispatcher, inbox_hub: Hub) -> None:
    chat, _ = await register_from_chat(inbox_hub, "resident-xss", "<img src=x onerror=alert(1)> течёт труба, Мира 3")
    await chat.http.close()
    _, page = await anna.get("/inbox/c/webchat:resident-xss")
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    _, listing = await anna.get("/inbox/partials/list")
    assert "<img src=x" not in listing


async def test_journal_filters_and_xlsx_export_with_russian_headers(anna: Dispatcher, inbox_hub: Hub) -> None:
    for n, text in enumerate(
        (
            "Засор мусоропровода, Ленина 3",
            "Течёт крыша, Ленина 3 кв 90, последний этаж",
            "Прорвало батарею, кипяток, Гагарина 7 кв 2",
        )
    ):
        chat, _ = await register_from_chat(inbox_hub, f"resident-journal-{n}", text)
        await chat.http.close()
    _, page = await anna.get("/inbox/journal?category=roof_leak")
    assert page.count('href="/inbox/r/') == 1 and "Протечка кровли" in page
    _, page = await anna.get("/inbox/journal?address=Гагарина")
    assert "Гагарина" in page and "Ленина" not in page.split("Заявок на странице")[1]
    async with anna.http.get(anna.base + "/inbox/journal/export?format=xlsx") as r:
        assert r.status == 200 and "spreadsheetml" in r.content_type
        book = openpyxl.load_workbook(io.BytesIO(await r.read()))
    rows = list(book.active.iter_rows(values_only=True))
    assert rows[0][0] == "Номер заявки" and "Категория" in rows[0] and "Дата и время регистрации" in rows[0]
    assert len(rows) == 4


async def test_reports_are_for_managers(inbox_hub: Hub, anna: Dispatcher) -> None:
    chat, number = await register_from_chat(inbox_hub, "resident-report", "Нет горячей воды, Мира 1 кв 5")
    await chat.http.close()
    assert inbox_hub.journal is not None
    await wait_for(lambda: inbox_hub.journal.inform_times([number]))  # type: ignore[union-attr]
    status, _ = await anna.get("/inbox/reports")
    assert status == 403
    boss = Dispatcher(f"http://127.0.0.1:{inbox_hub.port}")
    try:
        assert (await boss.login("boss", "manager-pass"))[0] == 200
        status, page = await boss.get("/inbox/reports")
        assert status == 200 and '<b class="total">1</b>' in page and "Отсутствие коммунальной услуги" in page
        assert "Сообщить заявителю номер, срок и меры" in page and "100%" in page
        assert "inform" not in visible_text(page)
    finally:
        await boss.close()


async def test_live_events_reach_the_inbox(anna: Dispatcher, inbox_hub: Hub) -> None:
    async with anna.http.get(anna.base + "/inbox/events") as stream:
        assert stream.status == 200 and stream.content_type == "text/event-stream"
        chat, _ = await register_from_chat(inbox_hub, "resident-live", "Искрит щиток на 3 этаже, Мира 9")
        seen = ""
        while "message.in" not in seen:
            seen += (await asyncio.wait_for(stream.content.readline(), 10)).decode()
        assert "webchat:resident-live" in seen
        await chat.http.close()


def test_user_command_line(database: EmbeddedDatabase, unique: str) -> None:
    env = {"ADSHUB_MONGO_URL": f"{database.url}cli_{unique}", "PATH": "/usr/bin:/bin", "ADSHUB_LOG_FORMAT": "text"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app", "user", *args], env=env, cwd=REPO, capture_output=True, text=True
        )

    assert run("add", "--login", "olga", "--password", "long-password", "--role", "manager").returncode == 0
    assert "olga\tmanager\tactive" in run("list").stdout
    assert run("add", "--login", "olga", "--password", "long-password", "--role", "manager").returncode == 1
    assert run("add", "--login", "x", "--password", "short", "--role", "dispatcher").returncode == 1
    assert run("disable", "--login", "olga").returncode == 0
    assert "olga\tmanager\tdisabled" in run("list").stdout


async def test_callback_task_done_informs_the_voicemail_resident(anna: Dispatcher, inbox_hub: Hub) -> None:
    j: Journal | None = inbox_hub.journal
    assert j is not None
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    await j.tasks.insert_one(
        {
            "_id": "t1",
            "kind": "callback",
            "phone": "+79161234567",
            "status": "open",
            "missed_at": now,
            "due_at": now + timedelta(minutes=10),
            "conversation_id": None,
        }
    )
    _, page = await anna.get("/inbox/")
    assert "+79161234567" in page and "Перезвонил" in page
    status, _ = await anna.post("/inbox/tasks/t1/done", {"note": "сообщил номер заявки"})
    assert status == 200
    task = await j.tasks.find_one({"_id": "t1"})
    assert task["status"] == "done" and task["met"] is True and task["by"] == "anna"
