"""The company's mailbox: IMAP intake, SMTP replies in the resident's thread.

``ADSHUB_IMAP_URL`` = ``imap[s]://user:pass@host:port/MAILBOX``. The mailbox is
polled; UIDVALIDITY and the last UID are kept in the journal, so a restarted
hub reads nothing twice and skips nothing. A letter is marked \\Seen only after
the broker confirmed it. imaplib is blocking: it runs in a worker thread.

Replies go out through ``ADSHUB_SMTP_URL`` (aiosmtplib) from
``ADSHUB_EMAIL_FROM`` with In-Reply-To/References, the request number in the
subject and ``Auto-Submitted: auto-replied``. Machine-generated mail (RFC 3834)
is stored and shown to dispatchers, never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import imaplib
import logging
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr
from typing import ClassVar, Literal
from urllib.parse import unquote, urlsplit

import aiosmtplib
from pydantic import Field, SecretStr, field_validator

from adshub.contract import Attachment, ChannelProfile, Inbound, Outbound, Sender
from adshub.errors import ConfigurationError, PermanentDeliveryError, RetryableDeliveryError, TransientError
from adshub.settings import ChannelSettings, Settings
from channels.base import BaseChannel, ChannelContext, SendResult
from channels.letters import LetterReader
from channels.mime import ParsedMail, valid_address

log = logging.getLogger("adshub.channels.email")


@dataclass(frozen=True)
class MailServer:
    secure: bool
    host: str
    port: int
    user: str
    password: str
    mailbox: str

    @classmethod
    def parse(cls, url: str, default_ports: tuple[int, int]) -> MailServer:
        parts = urlsplit(url)
        secure = parts.scheme.endswith("s")
        if not parts.hostname:
            raise ConfigurationError(f"mail server URL has no host: {parts.scheme}://…")
        return cls(
            secure=secure,
            host=parts.hostname,
            port=parts.port or (default_ports[1] if secure else default_ports[0]),
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            mailbox=unquote(parts.path.lstrip("/")) or "INBOX",
        )


@dataclass(frozen=True)
class FetchedMail:
    uid: int
    raw: bytes
    internal_date: datetime | None


class Mailbox:
    """A blocking IMAP session; every method is called from one worker thread at a time."""

    def __init__(self, server: MailServer) -> None:
        self.server = server
        self.imap: imaplib.IMAP4 | None = None
        self.uidvalidity: int | None = None

    def open(self) -> None:
        s = self.server
        if s.secure:
            self.imap = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=ssl.create_default_context(), timeout=30)
        else:
            self.imap = imaplib.IMAP4(s.host, s.port, timeout=30)
        self.imap.login(s.user, s.password)
        typ, _ = self.imap.select(_quote(s.mailbox))
        if typ != "OK":
            raise imaplib.IMAP4.error(f"cannot select mailbox {s.mailbox}")
        value = self.imap.response("UIDVALIDITY")[1]
        self.uidvalidity = int(value[0]) if value and value[0] else None
        if self.uidvalidity is None:
            typ, data = self.imap.status(_quote(s.mailbox), "(UIDVALIDITY)")
            match = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
            self.uidvalidity = int(match.group(1)) if match else 0

    def close(self) -> None:
        if self.imap is not None:
            with contextlib.suppress(Exception):
                self.imap.logout()
        self.imap = None

    def new_uids(self, after: int) -> list[int]:
        assert self.imap is not None
        self.imap.noop()
        typ, data = self.imap.uid("SEARCH", f"UID {after + 1}:*")
        if typ != "OK":
            raise imaplib.IMAP4.error("UID SEARCH failed")
        uids = [int(u) for u in (data[0] or b"").split()]
        return sorted(u for u in uids if u > after)

    def fetch(self, uid: int) -> FetchedMail | None:
        assert self.imap is not None
        typ, data = self.imap.uid("FETCH", str(uid), "(INTERNALDATE BODY.PEEK[])")
        if typ != "OK" or not data:
            return None
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                header, body = item
                stamp = imaplib.Internaldate2tuple(header)
                when = datetime.fromtimestamp(time.mktime(stamp), UTC) if stamp else None
                return FetchedMail(uid=uid, raw=bytes(body), internal_date=when)
        return None

    def mark_seen(self, uid: int) -> None:
        assert self.imap is not None
        self.imap.uid("STORE", str(uid), "+FLAGS", "(\\Seen)")


def _quote(mailbox: str) -> str:
    return f'"{mailbox}"' if " " in mailbox else mailbox


def too_large_note(size: int) -> str:
    return (
        f"Письмо слишком большое ({size / 2**20:.1f} МБ): прочитаны только заголовки, "
        "само письмо приложено файлом letter.eml."
    )


def to_inbound(
    mail: ParsedMail,
    *,
    uid: int,
    uidvalidity: int,
    mailbox: str,
    received_at: datetime | None,
    attachments: list[Attachment],
) -> Inbound:
    """One parsed letter as an Inbound; pure."""
    address = mail.reply_to or mail.sender_email
    message_key = mail.message_id.strip("<>") if mail.message_id else f"uid:{uidvalidity}:{uid}@{mailbox}"
    thread = list(dict.fromkeys([*mail.references, *mail.in_reply_to]))
    body = mail.text
    is_reply = bool(thread) or mail.subject.lower().startswith(("re:", "ответ:", "fw:", "fwd:"))
    subject = mail.subject.strip()
    text = body
    if subject and not is_reply and subject.lower() not in body.lower():
        text = f"{subject}\n{body}".strip()
    automatic = mail.automatic
    return Inbound(
        id=f"email:{message_key}"[:512],
        channel="email",
        address=address or "unknown",
        sender=Sender(id=(mail.sender_email or "unknown")[:320], name=mail.sender_name, email=mail.sender_email),
        kind="message",
        text=text[:20_000],
        attachments=attachments,
        received_at=received_at or mail.date or datetime.now(UTC),
        subject=subject[:1000] or None,
        external_ref=mail.message_id,
        thread=thread[-100:],
        auto_submitted=automatic is not None,
        answerable=address is not None,
        payload={"automatic_reason": automatic} if automatic else {"too_large": True} if mail.too_large else {},
        raw={"headers": mail.headers, "uid": uid, "uidvalidity": uidvalidity},
    )


class EmailSettings(ChannelSettings):
    """A mailbox to read (IMAP) and a server to send through (SMTP); either switches the channel on."""

    imap_url: SecretStr = SecretStr("")
    imap_poll_seconds: float = Field(30.0, gt=0)
    smtp_url: SecretStr = SecretStr("")
    email_from: str = ""
    """«ads@uk.example» or, with a name residents see, «АДС УК <ads@uk.example>»."""
    email_max_bytes: int = Field(25 * 1024 * 1024, ge=64 * 1024)
    """Larger letters are kept whole and shown as too large; only their headers are read."""
    email_read_seconds: float = Field(120.0, gt=0)
    """Longer readings are abandoned the same way."""

    @field_validator("email_from")
    @classmethod
    def _sender(cls, value: str) -> str:
        if value.strip() and sender_of(value)[1] is None:
            raise ValueError("must be an address, as ads@uk.example or «АДС УК <ads@uk.example>»")
        return value.strip()

    @property
    def sender(self) -> tuple[str | None, str | None]:
        """(display name, address) of ``email_from``."""
        return sender_of(self.email_from)

    @field_validator("imap_url")
    @classmethod
    def _imap_scheme(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and urlsplit(raw).scheme not in ("imap", "imaps"):
            raise ValueError("must be imap://user:pass@host:port/MAILBOX or imaps://…")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and urlsplit(raw).scheme not in ("smtp", "smtps"):
            raise ValueError("must be smtp://user:pass@host:port or smtps://…")
        return value


def sender_of(value: str) -> tuple[str | None, str | None]:
    """(name, address) of a sender an administrator wrote: a bare address or «Name <address>»."""
    name, address = parseaddr(value.strip())
    if not valid_address(address):
        return None, None
    return (name.strip() or None), address


class Email(BaseChannel):
    """The email channel."""

    name: ClassVar[str] = "email"
    profile: ClassVar[ChannelProfile] = ChannelProfile(
        "email",
        "Электронная почта",
        threads_by_subject=True,
        executor_address="Email",
        official_mail=True,
        sends_files=True,
    )
    settings_model: ClassVar[type[ChannelSettings]] = EmailSettings

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        config: EmailSettings = self.config_of(context.settings)
        self.config = config
        imap_url = config.imap_url.get_secret_value()
        smtp_url = config.smtp_url.get_secret_value()
        self.imap = MailServer.parse(imap_url, (143, 993)) if imap_url else None
        self.smtp = MailServer.parse(smtp_url, (25, 465)) if smtp_url else None
        name, address = config.sender
        self.sender_name = name
        self.sender = address or (self.imap.user if self.imap and valid_address(self.imap.user) else "")
        self.reader = LetterReader(config.email_max_bytes, config.email_read_seconds)

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        config = cls.config_of(settings)
        return bool(config.imap_url.get_secret_value() or config.smtp_url.get_secret_value())

    @property
    def cursor_name(self) -> str:
        assert self.imap is not None
        return f"imap:{self.imap.user}@{self.imap.host}:{self.imap.port}/{self.imap.mailbox}"

    async def open(self) -> None:
        if self.imap is not None:
            self.run(self._run(), "intake")

    async def stop(self) -> None:
        """A letter being taken finishes first (its \\Seen flag follows the broker's confirm)."""
        self._stopping.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.gather(*self._tasks), 30)
        await super().stop()
        await asyncio.to_thread(self.reader.close)

    async def _run(self) -> None:
        assert self.imap is not None
        delay = 1.0
        while not self.stopping:
            mailbox = Mailbox(self.imap)
            try:
                await asyncio.to_thread(mailbox.open)
                delay = 1.0
                while not self.stopping:
                    await self._take_new(mailbox)
                    await self.sleep(self.config.imap_poll_seconds)
            except TransientError as exc:
                log.warning("broker unavailable; the letter stays unread: %s", exc)
                await self.sleep(2.0)
            except (OSError, imaplib.IMAP4.error, EOFError) as exc:
                log.warning("IMAP unavailable (%s); reconnecting in %.0fs", exc, delay)
                await self.sleep(delay)
                delay = min(delay * 2, 60)
            finally:
                await asyncio.to_thread(mailbox.close)

    async def _take_new(self, mailbox: Mailbox) -> None:
        cursor = await self.journal.get_cursor(self.cursor_name)
        last = int(cursor.get("last_uid") or 0)
        if cursor.get("uidvalidity") not in (None, mailbox.uidvalidity):
            log.warning(
                "mailbox UIDVALIDITY changed (%s → %s); reading it again from the start",
                cursor.get("uidvalidity"),
                mailbox.uidvalidity,
            )
            last = 0
        for uid in await asyncio.to_thread(mailbox.new_uids, last):
            fetched = await asyncio.to_thread(mailbox.fetch, uid)
            if fetched is not None:
                await self._take(fetched, mailbox.uidvalidity or 0)
                await asyncio.to_thread(mailbox.mark_seen, uid)
            await self.journal.set_cursor(self.cursor_name, {"uidvalidity": mailbox.uidvalidity, "last_uid": uid})

    async def _take(self, fetched: FetchedMail, uidvalidity: int) -> None:
        assert self.imap is not None
        mail = await self.reader.read(fetched.raw)
        attachments = await self._store_attachments(mail)
        if mail.too_large:
            attachments.append(await self._keep_whole(fetched.raw, mail))
            mail.text = too_large_note(len(fetched.raw))
        inbound = to_inbound(
            mail,
            uid=fetched.uid,
            uidvalidity=uidvalidity,
            mailbox=self.imap.mailbox,
            received_at=fetched.internal_date,
            attachments=attachments,
        )
        await self.emit(inbound)
        if inbound.auto_submitted:
            log.info(
                "machine-generated mail stored, not answered (%s)", mail.automatic, extra={"message_id": inbound.id}
            )

    async def _keep_whole(self, raw: bytes, mail: ParsedMail) -> Attachment:
        """A letter too large to read is kept as it came, for a dispatcher to open."""
        location = await self.journal.store_file(
            raw, "letter.eml", "message/rfc822", {"channel": self.name, "message_id": mail.message_id}
        )
        return Attachment(kind="document", name="letter.eml", mime="message/rfc822", size=len(raw), location=location)

    async def _store_attachments(self, mail: ParsedMail) -> list[Attachment]:
        kept: list[Attachment] = []
        for item in mail.attachments[:20]:
            kind: Literal["photo", "document"] = "photo" if item.content_type.startswith("image/") else "document"
            if len(item.data) > self.settings.max_attachment_bytes:
                kept.append(
                    Attachment(
                        kind=kind,
                        name=item.name,
                        mime=item.content_type,
                        size=len(item.data),
                        meta={"skipped": "too large"},
                    )
                )
                continue
            location = await self.journal.store_file(
                item.data, item.name, item.content_type, {"channel": self.name, "message_id": mail.message_id}
            )
            kept.append(
                Attachment(kind=kind, name=item.name, mime=item.content_type, size=len(item.data), location=location)
            )
        return kept

    def message_id(self, outbound: Outbound) -> str:
        """A deterministic Message-ID: a retried send is recognisably the same letter."""
        domain = self.sender.split("@")[-1] if "@" in self.sender else "adshub.local"
        return f"<{hashlib.sha256(outbound.id.encode()).hexdigest()[:32]}@{domain}>"

    def compose(self, outbound: Outbound, files: Sequence[tuple[str, str, bytes]] = ()) -> EmailMessage:
        """The letter of one reply; ``files`` are (name, content type, bytes) of its attachments."""
        msg = EmailMessage()
        if self.sender:
            msg["From"] = formataddr((self.sender_name or self.settings.company_name, self.sender))
        msg["To"] = outbound.address
        subject = outbound.subject or (
            f"Заявка № {outbound.request_number}" if outbound.request_number else "Аварийно-диспетчерская служба"
        )
        msg["Subject"] = subject
        msg["Message-ID"] = self.message_id(outbound)
        msg["Date"] = formatdate(outbound.created_at.timestamp(), localtime=False, usegmt=True)
        if outbound.thread:
            msg["In-Reply-To"] = outbound.thread[-1]
            msg["References"] = " ".join(outbound.thread[-20:])
        if outbound.author in (None, "hub"):
            msg["Auto-Submitted"] = "auto-replied"
            msg["X-Auto-Response-Suppress"] = "All"
        if outbound.request_number:
            msg["X-Adshub-Request"] = outbound.request_number
        msg.set_content(outbound.text)
        for name, content_type, data in files:
            maintype, _, subtype = content_type.partition("/")
            if not subtype or maintype not in ("image", "application", "text", "audio", "video"):
                maintype, subtype = "application", "octet-stream"
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        return msg

    async def _files(self, outbound: Outbound) -> list[tuple[str, str, bytes]]:
        """The bytes of a reply's attachments; a file gone from the journal fails the delivery for good."""
        found: list[tuple[str, str, bytes]] = []
        for item in outbound.files:
            stored = await self.journal.read_file(item.ref)
            if stored is None:
                raise PermanentDeliveryError(f"attachment {item.name} is no longer in the journal")
            found.append((item.name, item.content_type, stored[0]))
        return found

    async def send(self, outbound: Outbound) -> SendResult:
        if self.smtp is None or not self.sender:
            raise PermanentDeliveryError("email replies are not configured (ADSHUB_SMTP_URL, ADSHUB_EMAIL_FROM)")
        if "@" not in outbound.address:
            raise PermanentDeliveryError(f"no email address to reply to: {outbound.address}")
        s = self.smtp
        letter = self.compose(outbound, await self._files(outbound))
        try:
            await aiosmtplib.send(
                letter,
                hostname=s.host,
                port=s.port,
                username=s.user or None,
                password=s.password or None,
                use_tls=s.secure,
                start_tls=None if not s.secure else False,
                timeout=30,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentDeliveryError(f"the mail server refused the address: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentDeliveryError(f"SMTP {exc.code}: {exc.message}") from exc
            raise RetryableDeliveryError(f"SMTP {exc.code}: {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RetryableDeliveryError(f"SMTP unavailable: {type(exc).__name__}: {exc}") from exc
        return "sent"
