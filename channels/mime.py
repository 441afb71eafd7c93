"""Parse real-world mail into what the hub needs, never crashing on it.

Robust to what Russian mailboxes actually receive: KOI8-R, windows-1251 and
UTF-8, a wrongly declared charset, quoted-printable and base64 in any case,
HTML-only letters, attachments with encoded-word names, invalid dates, CRLF,
and replies with quoted earlier text. Also decides whether a letter is
machine-generated (RFC 3834) and must never be answered automatically.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from html import unescape
from html.parser import HTMLParser
from typing import ClassVar

CANDIDATE_CHARSETS = ("utf-8", "cp1251", "koi8-r", "cp866", "iso-8859-5")
_RUSSIAN_COMMON = set("оеаинтсрвлкмдпуяыь")
MAX_TEXT = 20_000


@dataclass
class MailAttachment:
    name: str
    content_type: str
    data: bytes
    inline: bool = False


@dataclass
class ParsedMail:
    message_id: str | None
    subject: str
    sender_email: str | None
    sender_name: str | None
    reply_to: str | None
    date: datetime | None
    text: str
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    attachments: list[MailAttachment] = field(default_factory=list)
    automatic: str | None = None
    """Why this letter must not be answered automatically (RFC 3834), or None."""
    headers: dict[str, str] = field(default_factory=dict)


def _score(text: str) -> float:
    """How much a decoded text looks like Russian (or plain ASCII) rather than mojibake."""
    if not text:
        return 0.0
    letters = [c for c in text.lower() if c.isalpha()]
    if not letters:
        return 0.5
    cyrillic = [c for c in letters if "а" <= c <= "я" or c == "ё"]
    ascii_letters = sum(1 for c in letters if c.isascii())
    common = sum(1 for c in cyrillic if c in _RUSSIAN_COMMON)
    odd = sum(1 for c in text if c == "\ufffd" or ("\u0080" <= c <= "\u00ff") or ("\u2500" <= c <= "\u25ff"))
    upper_in_word = len(re.findall(r"[а-яё][А-ЯЁ]", text))
    return (ascii_letters + 2 * common - 3 * odd - 2 * upper_in_word) / max(len(letters), 1)


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Decode with the declared charset unless another candidate reads clearly better."""
    candidates: list[tuple[float, str]] = []
    declared = (declared or "").strip().lower() or None
    for charset in ([declared] if declared else []) + [c for c in CANDIDATE_CHARSETS if c != declared]:
        try:
            text = data.decode(charset)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
        bonus = 0.15 if charset == declared else 0.0
        candidates.append((_score(text) + bonus, text.replace("\x00", "")))
    if not candidates:
        return data.decode(declared or "utf-8", errors="replace") if declared else data.decode("utf-8", "replace")
    return max(candidates, key=lambda item: item[0])[1]


def decode_header_value(value: str | None) -> str:
    """Encoded words in any charset (and raw 8-bit headers) into one line of text."""
    if not value:
        return ""
    try:
        parts = decode_header(str(value))
    except Exception:
        return re.sub(r"\s+", " ", str(value)).strip()
    out: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset))
        else:
            out.append(chunk)
    text = "".join(out) if len(parts) > 1 else (out[0] if out else "")
    try:
        if len(parts) > 1:
            text = str(make_header(parts))
    except Exception:
        pass
    return re.sub(r"\s+", " ", text).strip()


class _TextFromHtml(HTMLParser):
    BLOCK: ClassVar[frozenset[str]] = frozenset(
        {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "pre"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.quote = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self.skip += 1
        if tag == "blockquote":
            self.quote += 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title") and self.skip:
            self.skip -= 1
        if tag == "blockquote" and self.quote:
            self.quote -= 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip and not self.quote:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextFromHtml()
    try:
        parser.feed(html)
        parser.close()
    except Exception:
        return unescape(re.sub(r"<[^>]+>", " ", html))
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


_QUOTE_HEADERS = [
    re.compile(r"^-{2,}\s*(Original Message|Исходное сообщение|Пересылаемое сообщение|Forwarded message)", re.I),
    re.compile(r"^On .{5,200} wrote:\s*$", re.I),
    re.compile(r"^.{0,200}(написал|написала|пишет|wrote)\s*(\(а\))?\s*:\s*$", re.I),
    re.compile(r"^(From|От|Отправлено|Sent):\s.+", re.I),
]


def strip_quoted(text: str) -> str:
    """The new part of a reply: quoted lines and everything after a quote header removed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for line in lines:
        stripped = line.strip()
        if any(p.match(stripped) for p in _QUOTE_HEADERS):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line.rstrip())
    result = "\n".join(kept).strip()
    return result or text.strip()


def _get(msg: Message, name: str) -> str | None:
    """A header as text; compat32 hands back Header objects for undecodable bytes."""
    value = msg.get(name)
    if value is None or isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return repr(value)


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    return decode_bytes(payload, part.get_content_charset())


def _filename(part: Message) -> str | None:
    raw = part.get_param("filename", header="content-disposition") or part.get_param("name")
    if raw is None:
        return None
    if isinstance(raw, tuple):
        charset, _, value = raw
        try:
            return value.encode("latin-1").decode(charset or "utf-8") if isinstance(value, str) else str(value)
        except (LookupError, UnicodeError):
            return str(value)
    return decode_header_value(str(raw)) or None


def _ids(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


def automatic_reason(msg: Message, sender: str | None) -> str | None:
    """Why a letter is machine-generated (RFC 3834): never answer those automatically."""
    auto = (_get(msg, "Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    content_type = (msg.get_content_type() or "").lower()
    if content_type == "multipart/report":
        return "delivery status report (multipart/report)"
    if any(
        str(p.get_content_type()).lower() in ("message/delivery-status", "message/disposition-notification")
        for p in msg.walk()
    ):
        return "delivery status notification"
    local = (sender or "").split("@")[0].lower()
    if local in ("mailer-daemon", "postmaster", "mail-daemon", "noreply", "no-reply", "donotreply"):
        return f"sent by {local}"
    return_path = _get(msg, "Return-Path")
    if return_path is not None and return_path.strip() in ("<>", ""):
        return "empty Return-Path (a bounce)"
    for header in msg.keys():
        if header.lower().startswith("list-"):
            return f"mailing list ({header})"
    precedence = (_get(msg, "Precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    if _get(msg, "X-Auto-Response-Suppress") is not None:
        return "X-Auto-Response-Suppress"
    for header in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Failed-Recipients"):
        if _get(msg, header) is not None:
            return header
    return None


def _safe_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not 1990 <= parsed.year <= 2100:
        return None
    return parsed.astimezone(UTC)


def parse_mail(raw: bytes) -> ParsedMail:
    """Everything the hub needs from one RFC 5322 message. Never raises on malformed input."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    sender_header = decode_header_value(_get(msg, "Reply-To")) or ""
    from_header = decode_header_value(_get(msg, "From"))
    name, address = parseaddr(from_header)
    if not address and from_header:
        found = re.search(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", from_header)
        address = found.group(0) if found else ""
    reply_to = None
    if sender_header:
        addresses = [a for _, a in getaddresses([sender_header]) if "@" in a]
        reply_to = addresses[0].lower() if addresses else None
    plain: list[str] = []
    html: list[str] = []
    attachments: list[MailAttachment] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        content_type = (part.get_content_type() or "text/plain").lower()
        disposition = (_get(part, "Content-Disposition") or "").split(";")[0].strip().lower()
        filename = _filename(part)
        if content_type in ("message/delivery-status", "message/rfc822", "text/rfc822-headers"):
            continue
        if disposition == "attachment" or (filename and not content_type.startswith("text/")):
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                attachments.append(
                    MailAttachment(filename or "attachment", content_type, data, inline=disposition == "inline")
                )
            continue
        if content_type == "text/plain":
            plain.append(_part_text(part))
        elif content_type == "text/html":
            html.append(_part_text(part))
        elif content_type.startswith("image/"):
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                attachments.append(
                    MailAttachment(filename or f"image.{content_type.split('/')[1]}", content_type, data, inline=True)
                )
    body = "\n\n".join(t.strip() for t in plain if t.strip())
    if not body and html:
        body = "\n\n".join(html_to_text(h) for h in html)
    body = strip_quoted(body.replace("\r\n", "\n"))[:MAX_TEXT]
    message_id = _ids(_get(msg, "Message-ID") or _get(msg, "Message-Id"))
    sender = address.lower() if address else None
    return ParsedMail(
        message_id=message_id[0] if message_id else None,
        subject=decode_header_value(_get(msg, "Subject")),
        sender_email=sender,
        sender_name=name.strip() or None,
        reply_to=reply_to,
        date=_safe_date(_get(msg, "Date")),
        text=body,
        in_reply_to=_ids(_get(msg, "In-Reply-To")),
        references=_ids(_get(msg, "References")),
        attachments=attachments,
        automatic=automatic_reason(msg, sender),
        headers={k: decode_header_value(str(v))[:500] for k, v in list(msg.items())[:60]},
    )
