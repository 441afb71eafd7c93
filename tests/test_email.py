"""Email: real mail parsed robustly, a real Dovecot mailbox, an SMTP sink, threaded replies, no auto-reply loops."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from app.runtime import Hub
from channels.mime import decode_bytes, parse_mail, strip_quoted
from journal.repository import Journal
from tests.helpers import cleanup_topology, journal_of, make_settings, metric, shared_path, wait_for
from tests.mailservers import Dovecot, SmtpSink, letter


def eml(name: str) -> bytes:
    return shared_path("samples", "email", name).read_bytes()


# -- parsing real mail -------------------------------------------------------------


def test_charsets_and_encoded_words() -> None:
    for name in ("02_koi8r_base64_body_and_subject.eml", "03_windows1251_base64_body_and_subject.eml"):
        mail = parse_mail(eml(name))
        assert mail.subject == "Алфавит" and mail.text == "Вопрос"
    utf8 = parse_mail(eml("01_utf8_qp_ru_encoded_word_subject.eml"))
    assert utf8.subject == "Simple text. How are you? Как ты поживаешь?"
    assert "по-русски" in utf8.text


def test_bad_date_html_only_attachments_and_mixed_encodings() -> None:
    outlook = parse_mail(eml("04_windows1251_outlook_express_bad_date.eml"))
    assert outlook.date is None and outlook.sender_name and outlook.sender_name.startswith("Атиков")
    assert parse_mail(eml("05_html_only.eml")).text == "This is an html body."
    iphone = parse_mail(eml("06_multipart_jpeg_attachment_iphone.eml"))
    assert [(a.name, a.content_type, len(a.data)) for a in iphone.attachments] == [("photo.JPG", "image/jpeg", 9023)]
    mixed = parse_mail(eml("13_cpython_msg_10_mixed_transfer_encodings.eml"))
    assert "Base64 encoded message" in mixed.text and "no Content-Transfer-Encoding" in mixed.text
    koi8_name = parse_mail(eml("14_koi8r_rfc2047_in_filename_param.eml"))
    assert koi8_name.attachments[0].name == "Список.doc"


def test_thread_headers() -> None:
    reply = parse_mail(eml("07_reply_in_thread_in_reply_to_references.eml"))
    assert reply.in_reply_to == ["<348F04F142D69C21-291E56D292BC@xxxx.net>"]
    assert len(reply.references) == 2


@pytest.mark.parametrize(
    "name",
    [
        "08_autoreply_auto_submitted_rfc3834.eml",
        "09_autoreply_exchange_without_auto_submitted.eml",
        "10_bounce_dsn_yandex_ru.eml",
        "11_bounce_non_dsn_mailru.eml",
        "12_cpython_msg_16_dsn_bounce.eml",
    ],
)
def test_machine_generated_mail_is_recognised(name: str) -> None:
    assert parse_mail(eml(name)).automatic


def test_a_person_is_not_machine_generated() -> None:
    for name in ("01_utf8_qp_ru_encoded_word_subject.eml", "07_reply_in_thread_in_reply_to_references.eml"):
        assert parse_mail(eml(name)).automatic is None


def test_wrongly_declared_charset_is_read_correctly() -> None:
    body = "Прорвало трубу в подвале, вода по щиколотку".encode("cp1251")
    raw = (
        b"From: a@b.ru\r\nSubject: =?koi8-r?B?" + base64.b64encode("Авария".encode("koi8-r")) + b"?=\r\n"
        b"Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    )
    mail = parse_mail(raw)
    assert mail.text == "Прорвало трубу в подвале, вода по щиколотку"
    assert mail.subject == "Авария"
    assert decode_bytes("привет".encode(), "latin-1") == "привет"


def test_quoted_text_is_stripped_from_replies() -> None:
    text = (
        "Вода всё ещё течёт!\n\n24.11.2026, 03:12, АДС <ads@uk.example> написал:\n> Заявка № 2026-000001\n"
        "> зарегистрирована"
    )
    assert strip_quoted(text) == "Вода всё ещё течёт!"
    assert strip_quoted("Спасибо\n-----Original Message-----\nFrom: x") == "Спасибо"


def test_garbage_never_crashes_the_parser() -> None:
    for raw in (
        b"",
        b"\x00\xff\xfe",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x--",
        b"Subject: =?unknown-charset?B?zzz?=\r\n\r\nbody",
        b"From: <<<>>>\r\nDate: yesterday\r\n\r\n\xd0",
    ):
        mail = parse_mail(raw)
        assert isinstance(mail.text, str)


# -- the mailbox end to end --------------------------------------------------------


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def mail_settings(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, dovecot: Dovecot, smtp: SmtpSink
) -> Settings:
    return make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        imap_url=dovecot.url,
        smtp_url=smtp.url,
        email_from="ads@uk.example",
        imap_poll_seconds=0.3,
    )


@pytest.fixture
async def mail_hub(mail_settings: Settings) -> AsyncIterator[Hub]:
    hub = Hub(mail_settings, ["router", "email"])
    await hub.start()
    yield hub
    await hub.stop()
    await cleanup_topology(mail_settings)


def koi8_complaint() -> bytes:
    subject = base64.b64encode("Течёт батарея".encode("koi8-r")).decode()
    body = (
        "Здравствуйте! В квартире 12 по ул. Мира, д. 40 течёт батарея в детской, "
        "из-под заглушки сочится горячая вода. Прошу прислать слесаря."
    ).encode("koi8-r")
    return (
        b"From: =?koi8-r?B?" + base64.b64encode("Белова Ирина".encode("koi8-r")) + b"?= <belova@example.ru>\r\n"
        b"To: ads@uk.example\r\nSubject: =?koi8-r?B?" + subject.encode() + b"?=\r\n"
        b"Message-ID: <koi8-1@example.ru>\r\nDate: Tue, 24 Nov 2026 09:00:00 +0300\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n"
    )


async def test_koi8r_complaint_is_answered_once_in_its_thread_and_auto_replies_are_not(
    mail_hub: Hub, mail_settings: Settings, dovecot: Dovecot, smtp: SmtpSink
) -> None:
    dovecot.append(koi8_complaint())
    dovecot.append(eml("08_autoreply_auto_submitted_rfc3834.eml"))
    reply = (await wait_for(lambda: smtp.messages, timeout=20))[0]
    assert reply["To"] == "belova@example.ru"
    assert reply["In-Reply-To"] == "<koi8-1@example.ru>" and "<koi8-1@example.ru>" in reply["References"]
    assert reply["Auto-Submitted"] == "auto-replied"
    number = reply["X-Adshub-Request"]
    assert number and f"[Заявка № {number}]" in reply["Subject"] and reply["Subject"].startswith("Re: Течёт батарея")
    assert "зарегистрирована" in reply.get_content() and "С уважением" in reply.get_content()

    j = Journal.connect(mail_settings.mongo_url, mail_settings.database_name)
    try:
        auto = await wait_for(lambda: j.messages.find_one({"auto_submitted": True}))
        assert auto["direction"] == "in" and auto["request_number"] is None
        request = await j.requests.find_one({"_id": number})
        assert request["category"] == "heating_accident" and request["address"]["street"] == "Мира"
        assert request["contact"]["email"] == "belova@example.ru"
    finally:
        await j.close()
    async with journal_of(mail_settings) as j:
        answers = await j.messages.count_documents({"direction": "out", "in_reply_to": auto["_id"]})
    assert answers == 0, "a reply to machine mail was recorded"
    assert len(smtp.messages) == 1
    assert all(dovecot.seen_flags().values()) and len(dovecot.seen_flags()) == 2

    follow = letter(
        f"Re: Течёт батарея [Заявка № {number}]",
        "Вода уже на полу!\n\n> цитата",
        sender="Белова Ирина <belova@example.ru>",
        message_id="<koi8-2@example.ru>",
        In_Reply_To=reply["Message-ID"],
        References=f"<koi8-1@example.ru> {reply['Message-ID']}",
    )
    dovecot.append(follow)
    await wait_for(lambda: len(smtp.messages) == 2, timeout=20)
    assert number in smtp.messages[1].get_content()
    j = Journal.connect(mail_settings.mongo_url, mail_settings.database_name)
    try:
        assert await j.requests.count_documents({}) == 1
        stored = await j.messages.find_one({"_id": "email:koi8-2@example.ru"})
        assert stored["request_number"] == number and stored["text"] == "Вода уже на полу!"
    finally:
        await j.close()


async def test_a_restarted_hub_reads_nothing_twice(mail_settings: Settings, dovecot: Dovecot, smtp: SmtpSink) -> None:
    dovecot.append(
        letter(
            "Засор",
            "Засор канализации, у соседей снизу тоже не уходит вода. Лесная 5, кв 3",
            message_id="<r1@example.ru>",
        )
    )
    hub = Hub(mail_settings, ["router", "email"])
    await hub.start()
    try:
        await wait_for(lambda: len(smtp.messages) == 1, timeout=20)
    finally:
        await hub.stop()
    dovecot.append(letter("Ещё", "В подъезде не горит лампочка, Лесная 5, 2 этаж", message_id="<r2@example.ru>"))
    taken = metric("adshub_messages_in_total", channel="email")
    hub = Hub(mail_settings, ["router", "email"])
    await hub.start()
    try:
        await wait_for(lambda: len(smtp.messages) == 2, timeout=20)
        assert metric("adshub_messages_in_total", channel="email") - taken == 1, "the restarted hub read r1 again"
    finally:
        await hub.stop()
        await cleanup_topology(mail_settings)
    assert len(smtp.messages) == 2
    assert [m["In-Reply-To"] for m in smtp.messages] == ["<r1@example.ru>", "<r2@example.ru>"]
