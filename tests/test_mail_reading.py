"""Real mail read right: declared charsets trusted, raw 8-bit headers, senders kept whatever their display
name, forwarded text kept, machines recognised, malformed letters repaired, the company's own sender with a
name, large letters off the event loop — on constructed letters and on every peer project's test letter."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from adshub.errors import ConfigurationError
from adshub.settings import Settings
from app.embedded import EmbeddedDatabase
from channels.email import EmailSettings
from channels.letters import LetterReader
from channels.mime import decode_bytes, parse_mail, strip_quoted, valid_address
from tests.helpers import REPO, SHARED, journal_of, make_settings, running_hub, wait_for
from tests.mailservers import Dovecot, SmtpSink, letter

PEERS = SHARED / "samples" / "email-peers"


def peer_letters() -> list[Path]:
    if not PEERS.is_dir():
        return []
    return sorted(p for p in PEERS.rglob("*") if p.is_file() and p.suffix in (".eml", ".txt", ".box"))


def raw(headers: str, body: bytes = b"body", extra: bytes = b"") -> bytes:
    return headers.encode("utf-8").replace(b"\n", b"\r\n") + extra + b"\r\n\r\n" + body


# -- charsets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "charset"),
    [
        ("Die Lieferung für Herrn Müller", "iso-8859-1"),
        ("Réclamation n° 12 : chauffage en panne", "iso-8859-1"),
        ("Кв. 5, t° 12°C ✓ ©", "utf-8"),
        ("暖气坏了，请尽快修理", "gb2312"),
        ("난방이 고장났습니다", "euc-kr"),
        ("暖房が壊れました", "iso-2022-jp"),
        ("Течёт батарея, Мира 5", "koi8-r"),
        ("Течёт батарея, Мира 5", "windows-1251"),
    ],
)
def test_a_declared_charset_that_decodes_cleanly_is_trusted(text: str, charset: str) -> None:
    body = text.encode(charset)
    mail = parse_mail(raw(f"From: a@b.example\nSubject: x\nContent-Type: text/plain; charset={charset}", body))
    assert mail.text == text


def test_undeclared_russian_single_byte_text_is_still_read() -> None:
    for charset in ("cp1251", "koi8-r", "cp866"):
        body = "Прорвало трубу в подвале, вода по щиколотку".encode(charset)
        assert decode_bytes(body, None) == "Прорвало трубу в подвале, вода по щиколотку", charset


# -- headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["cp1251", "koi8-r", "utf-8"])
def test_raw_8bit_headers_are_decoded_like_bodies(charset: str) -> None:
    headers = b"From: " + "Иванов Иван".encode(charset) + b" <ivan@example.ru>\r\n"
    headers += b"Subject: " + "Течёт крыша над квартирой".encode(charset) + b"\r\n"
    headers += f"Content-Type: text/plain; charset={charset}\r\nMIME-Version: 1.0".encode()
    part = b"\r\n\r\n" + "Прошу срочно".encode(charset)
    mail = parse_mail(headers + part)
    assert mail.subject == "Течёт крыша над квартирой"
    assert mail.sender_name == "Иванов Иван" and mail.sender_email == "ivan@example.ru"
    assert mail.text == "Прошу срочно"


def test_a_raw_8bit_attachment_name_is_decoded() -> None:
    message = (
        "From: a@b.example\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nфото\r\n--XX\r\nContent-Type: image/jpeg\r\n"
        'Content-Disposition: attachment; filename="Потолок.jpg"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        "/9j/4AAQ\r\n--XX--\r\n"
    ).encode()
    assert [a.name for a in parse_mail(message).attachments] == ["Потолок.jpg"]


def test_a_comma_in_an_encoded_display_name_keeps_the_sender() -> None:
    name = base64.b64encode("Иванов, Иван".encode()).decode()
    mail = parse_mail(raw(f"From: =?utf-8?B?{name}?= <ivan@example.ru>\nSubject: x"))
    assert mail.sender_email == "ivan@example.ru" and mail.sender_name == "Иванов, Иван"


# -- quotes and forwards -------------------------------------------------------------------------


def test_forwarded_letters_are_kept_and_replies_quoted_are_cut() -> None:
    forwarded = (
        "Посмотрите, что пишет соседка.\n\n-------- Пересылаемое сообщение --------\n"
        "От: Петрова <p@example.ru>\nТема: Вода\n\nУ меня с потолка течёт вода, Мира 5 кв 12"
    )
    assert "с потолка течёт вода" in strip_quoted(forwarded)
    english = "FYI\n\n---------- Forwarded message ---------\nFrom: x <x@y.z>\n\nThe heating is off at Lenina 7"
    assert "heating is off" in strip_quoted(english)
    body_from = "В подвале вода.\nFrom: the caretaker, who saw it at night\nСрочно!"
    assert strip_quoted(body_from) == body_from
    for attribution in (
        "Am 01.12.2025 um 10:00 schrieb Max Mustermann <max@example.de>:",
        "On Mon, Dec 1, 2025 at 10:00 AM John <john@example.com> wrote:",
        '01.12.2025, 10:00, "АДС" <ads@uk.example>:',
        "Понедельник, 1 декабря 2025, 10:00 +03:00 от АДС <ads@uk.example>:",
        "пн, 1 дек. 2025 г. в 10:00, АДС <ads@uk.example>:",
        "Le lun. 1 déc. 2025 à 10:00, Jean <jean@example.fr> a écrit :",
    ):
        reply = f"Всё ещё течёт!\n\n{attribution}\n> Заявка № 2026-000001 зарегистрирована"
        assert strip_quoted(reply) == "Всё ещё течёт!", attribution
    outlook = (
        "Спасибо, ждём.\n\nFrom: АДС <ads@uk.example>\nSent: Monday, December 1, 2025 10:00\nTo: me\nSubject: x\n\nold"
    )
    assert strip_quoted(outlook) == "Спасибо, ждём."


def test_a_long_letter_with_a_forward_keeps_its_text() -> None:
    long_text = "Жалоба жильцов дома.\n" + ("Вода стоит в подвале уже неделю. " * 3000)
    message = raw(
        "From: a@b.example\nSubject: Fwd: жалоба\nContent-Type: text/plain; charset=utf-8",
        ("См. ниже\n\n---------- Forwarded message ---------\nFrom: Иванова <i@example.ru>\n\n" + long_text).encode(),
    )
    text = parse_mail(message, max_text=200_000).text
    assert "Вода стоит в подвале" in text and len(text) > 90_000


# -- machines ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        "From: house-list-request@lists.example.org",
        "From: owner-tenants@lists.example.org",
        "From: tenants-bounces@lists.example.org",
        "From: No Reply <no_reply@bank.example>",
        "From: noreply-service@gosuslugi.example",
        "From: do-not-reply@portal.example",
        "From: Cron Daemon <root@server.example>\nSubject: Cron <root@server> /usr/bin/backup",
        "From: tracker@issues.example\nX-Redmine-Project: uk",
        "From: github@example.com\nX-GitHub-Reason: mention",
        "From: list@example.org\nSubject: Tenants digest, Vol 12, Issue 3",
    ],
)
def test_automated_senders_without_rfc3834_headers_are_not_answered(headers: str) -> None:
    mail = parse_mail(raw(headers + "\nSubject: notice"))
    assert mail.automatic and not mail.would_answer


def test_a_resident_is_answered() -> None:
    mail = parse_mail(raw("From: Мария <maria.replies@example.ru>\nSubject: Течёт кран"))
    assert mail.automatic is None and mail.would_answer


# -- malformed but readable ------------------------------------------------------------------------


def test_malformed_letters_keep_their_sender_ids_and_text() -> None:
    continuation = b"Subject: long subject\r\ncontinued without a blank\r\nFrom: a@b.example\r\n\r\nbody"
    assert parse_mail(continuation).sender_email == "a@b.example"
    forwarded_first = b"---------- Forwarded message ---------\r\nFrom: x <x@y.example>\r\nSubject: s\r\n\r\nbody"
    assert parse_mail(forwarded_first).sender_email == "x@y.example"
    bare_id = parse_mail(raw("From: a@b.example\nMessage-ID: 1234.5678@host.example"))
    assert bare_id.message_id == "<1234.5678@host.example>"
    embedded = (
        b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: neighbour@example.ru\r\nSubject: Leak\r\n\r\nWater from the ceiling\r\n--XX--\r\n"
    )
    mail = parse_mail(embedded)
    assert [(a.name, a.content_type) for a in mail.attachments] == [("Leak.eml", "message/rfc822")]
    assert "Water from the ceiling" in mail.text and "see attached" in mail.text


def test_a_multipart_without_its_boundary_keeps_its_text() -> None:
    body = b"--ZZZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + "Течёт стояк".encode() + b"\r\n--ZZZ--\r\n"
    mail = parse_mail(raw("From: a@b.example\nContent-Type: multipart/mixed", body))
    assert mail.text == "Течёт стояк"


# -- every peer project's letter -----------------------------------------------------------------

MOJIBAKE = re.compile(r"[ÐÑ][\u0080-\u00bf]|Ã[\u0080-\u00bf]|[Ѐ-ӿ][╛╜┐└▄▀]|уБ|В[╗╠▒]")


@pytest.mark.parametrize("path", peer_letters(), ids=lambda p: str(p.relative_to(PEERS)))
def test_every_peer_letter_is_read_without_mojibake_and_keeps_its_sender(path: Path) -> None:
    data = path.read_bytes()
    mail = parse_mail(data)
    source = data.decode("utf-8", "replace")
    for field in (mail.subject, mail.text, mail.sender_name or ""):
        if "\ufffd" in field:
            assert b"\xef\xbf\xbd" in data, f"a replacement character the letter does not carry: {field[:80]!r}"
        found = MOJIBAKE.search(field)
        assert found is None or found.group(0) in source, (
            f"mojibake {found.group(0) if found else ''!r}: {field[:80]!r}"
        )
    header = re.search(rb"^From:[ \t]*(.*(?:\r?\n[ \t].*)*)", data.split(b"\n\n")[0].split(b"\r\n\r\n")[0], re.M)
    addresses = re.findall(rb"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", header.group(1)) if header else []
    if addresses:
        assert mail.sender_email is not None and valid_address(mail.sender_email)
        assert mail.sender_email.encode() in {a.lower() for a in addresses}


def test_the_inspect_command_reads_every_peer_letter() -> None:
    if not peer_letters():
        pytest.skip(f"shared data not available: {PEERS} (set ADSHUB_SHARED_DIR)")
    result = subprocess.run(
        [sys.executable, "-m", "app", "email", "inspect", *map(str, sorted(PEERS.glob("*/*")))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reports) == len([p for p in PEERS.rglob("*") if p.is_file() and p.parent != PEERS])
    assert not [r for r in reports if "error" in r]
    keys = {"file", "subject", "sender_email", "sender_name", "text", "attachments", "automatic", "would_answer"}
    assert all(keys | {"message_id", "in_reply_to", "references"} <= set(r) for r in reports)
    bounces = [r for r in reports if "multipart_report" in r["file"]]
    assert bounces and all(r["automatic"] and not r["would_answer"] for r in bounces)


# -- the company's sender and large letters ------------------------------------------------------


def test_a_sender_the_hub_cannot_use_stops_it_at_start() -> None:
    settings = Settings(_env_file=None, email_from="АДС УК без адреса")
    with pytest.raises(ConfigurationError) as info:
        settings.channel(EmailSettings)
    assert "ADSHUB_EMAIL_FROM" in str(info.value)


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


async def test_replies_go_out_from_a_cyrillic_display_name_and_a_huge_letter_is_kept_whole(
    database: EmbeddedDatabase, rabbitmq: str, unique: str, tmp_path: Path, dovecot: Dovecot, smtp: SmtpSink
) -> None:
    settings = make_settings(
        database,
        rabbitmq,
        unique,
        tmp_path,
        imap_url=dovecot.url,
        smtp_url=smtp.url,
        email_from="АДС УК <ads@uk-example.ru>",
        email_max_bytes=512 * 1024,
        imap_poll_seconds=0.3,
    )
    dovecot.append(letter("Течёт батарея", "Течёт батарея в комнате, Мира 5 кв 12", message_id="<c1@example.ru>"))
    huge = letter("Фото потопа", "Вода по щиколотку, Мира 5 кв 3\n" + "x" * (700 * 1024), message_id="<big@example.ru>")
    dovecot.append(huge)
    async with running_hub(settings, ["router", "email"]):
        await wait_for(lambda: len(smtp.messages) == 2, timeout=30)
        async with journal_of(settings) as j:
            big = await wait_for(lambda: j.messages.find_one({"_id": "email:big@example.ru"}))
    sender = str(make_header(decode_header(smtp.messages[0]["From"])))
    assert sender == "АДС УК <ads@uk-example.ru>"
    assert "слишком большое" in big["text"] and big["subject"] == "Фото потопа"
    assert [a["name"] for a in big["attachments"]] == ["letter.eml"] and big["attachments"][0]["size"] >= len(huge)


async def test_a_large_letter_is_read_in_another_process() -> None:
    body = "Вода по щиколотку в подвале, Мира 5\n" + "Подробности. " * 200_000
    data = letter("Потоп", body, charset="utf-8")
    reader = LetterReader(max_bytes=20 * 1024 * 1024, timeout=60)
    try:
        mail = await reader.read(data)
        assert reader._pool is not None, "a letter this large is read in the reading process"
    finally:
        reader.close()
    assert mail.subject == "Потоп" and mail.text.startswith("Вода по щиколотку")
