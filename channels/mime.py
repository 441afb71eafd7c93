"""Read real-world mail into what the hub needs, never crashing on it.

- **Charsets.** A declared charset that decodes the bytes cleanly is trusted; the
  only exceptions are evidence no honest letter produces: bytes that are valid
  UTF-8 under a single-byte declaration, and Russian single-byte charsets
  (KOI8-R, windows-1251, CP866…), which old clients mix up and which decode any
  bytes — there the best-reading Russian charset wins. Undeclared or undecodable
  bytes are detected (charset-normalizer, first among the charsets Russian mail
  uses, then among all).
- **Headers** are read from the raw bytes: RFC 2047 encoded words in any charset,
  raw 8-bit cp1251/KOI8-R/UTF-8 (RFC 6532) decoded by the same rules as bodies,
  addresses parsed before display names are decoded (a comma in «Иванов, Иван»
  does not lose the sender). Header lines that lost their leading whitespace, a
  forward marker above the headers, a Message-ID without angle brackets are
  repaired.
- **Text.** text/plain, else HTML as text; quoted replies removed (the common
  Russian and international attribution lines, Outlook's header blocks, ``>``
  lines) while forwarded letters are kept; a multipart without its boundary is
  read as text; embedded letters (message/rfc822) are kept as ``.eml`` files and
  their text is appended.
- **Machines.** Auto-replies, bounces, lists, digests, cron and tracker
  notifications are recognised (RFC 3834 and the usual signs), so they are never
  answered.

Everything here is pure and synchronous; the channel runs it off the event loop.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.policy
import quopri
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from html import unescape
from html.parser import HTMLParser
from typing import ClassVar

import charset_normalizer

MAX_TEXT = 20_000
SAMPLE = 64 * 1024
"""How much of a body charset detection reads; the whole body is decoded once, with the charset found."""

RUSSIAN_SINGLE_BYTE = ("cp1251", "koi8_r", "cp866", "iso8859_5", "mac_cyrillic", "koi8_u")
RUSSIAN_COMPARED = ("cp1251", "koi8_r", "cp866")
"""The ones old clients actually confuse; a declared one of them gives way only to another that reads better."""
WESTERN_SINGLE_BYTE = ("ascii", "latin_1", "cp1252", "iso8859_15")
LIKELY = ("utf_8", "cp1251", "koi8_r", "cp866", "cp1252", "iso8859_5")
"""What mail in a Russian mailbox is written in, tried first when nothing (or nothing true) is declared."""
ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "windows-874": "cp874",
    "x-mac-cyrillic": "mac_cyrillic",
    "utf8": "utf_8",
    "unicode-1-1-utf-7": "utf_7",
}
UNDECLARED = frozenset({"", "unknown", "unknown-8bit", "x-unknown", "default", "us-ascii", "ascii"})
"""Declarations that say nothing about 8-bit bytes."""
SEVEN_BIT_CODECS = ("iso2022", "utf_7", "hz")
"""Codecs whose text is ASCII bytes with escapes: a declaration of one of them is always followed."""


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
    """Why this letter must not be answered automatically (RFC 3834 and the like), or None."""
    headers: dict[str, str] = field(default_factory=dict)
    too_large: bool = False
    """Only the headers were read: the letter is over the size the hub reads."""

    @property
    def would_answer(self) -> bool:
        return self.automatic is None and bool(self.reply_to or self.sender_email)


# -- charsets ------------------------------------------------------------------------


def codec_of(charset: str | None) -> str | None:
    """The Python codec for a charset label (with the aliases mail uses), or None when unknown."""
    label = (charset or "").strip().strip('"').lower()
    if label in UNDECLARED:
        return None
    label = ALIASES.get(label, label)
    if not label.isascii() or not label.isprintable() or len(label) > 40:
        return None
    try:
        return codecs.lookup(label).name.replace("-", "_")
    except (LookupError, ValueError):
        return None


def _decodes(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError, ValueError):
        return None


def _is_multibyte_utf8(data: bytes) -> bool:
    return any(b >= 0x80 for b in data) and _decodes(data, "utf_8") is not None


def _ranked(data: bytes, candidates: tuple[str, ...] | None) -> list[tuple[str, float]]:
    """Candidate codecs by how cleanly they read ``data`` (charset-normalizer's mess ratio, lower is better)."""
    try:
        matches = charset_normalizer.from_bytes(data, cp_isolation=list(candidates) if candidates else None)
    except Exception:
        return []
    return [(m.encoding, float(m.chaos)) for m in matches]


def _western_mojibake(text: str) -> bool:
    """Text that is mostly accented Latin letters: Cyrillic bytes read as a Western charset («Ïðîðâàëî»)."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 4:
        return False
    accented = sum(1 for c in letters if "\u00c0" <= c <= "\u00ff")
    return accented / len(letters) > 0.6


def detect(data: bytes) -> str | None:
    """The codec of undeclared (or wrongly declared) bytes, or None when nothing reads them."""
    sample = data[:SAMPLE]
    if not any(b >= 0x80 for b in sample) and b"\x1b" not in sample:
        return "ascii" if _decodes(data, "ascii") is not None else None
    if _is_multibyte_utf8(sample) and _decodes(data, "utf_8") is not None:
        return "utf_8"
    if b"\x1b$" in sample or b"\x1b(" in sample:
        for codec in ("iso2022_jp", "iso2022_jp_2", "iso2022_kr"):
            if _decodes(data, codec) is not None:
                return codec
    for candidates in (LIKELY, None):
        for codec, chaos in _ranked(sample, candidates):
            if chaos <= 0.3 and _decodes(data, codec) is not None:
                return codec
    return None


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Text of a body or header part: the declared charset when it reads the bytes cleanly (see the module's
    doc for the two exceptions), else the detected one; never raises, never returns raw escapes."""
    if not data:
        return ""
    codec = codec_of(declared)
    if codec is not None:
        text = _decodes(data, codec)
        if text is not None:
            if codec.startswith(SEVEN_BIT_CODECS) or codec in ("utf_8", "utf_16", "utf_32"):
                return text.replace("\x00", "")
            if _is_multibyte_utf8(data[:SAMPLE]) and _decodes(data, "utf_8") is not None:
                return data.decode("utf_8").replace("\x00", "")
            if codec in RUSSIAN_SINGLE_BYTE:
                return _best_russian(data, codec, text)
            if codec in WESTERN_SINGLE_BYTE and _western_mojibake(text[:SAMPLE]):
                found = _best_russian(data, None, None)
                if found:
                    return found
            return text.replace("\x00", "")
    found_codec = detect(data)
    if found_codec is not None:
        return data.decode(found_codec, errors="replace").replace("\x00", "")
    return data.decode(codec or "utf_8", errors="replace").replace("\x00", "")


def _best_russian(data: bytes, declared: str | None, declared_text: str | None) -> str:
    """Among the Russian single-byte charsets, the one that reads ``data`` best; the declared one keeps its
    place unless another reads clearly better."""
    ranked = dict(_ranked(data[:SAMPLE], RUSSIAN_COMPARED))
    if declared is not None and declared_text is not None and declared in RUSSIAN_COMPARED:
        mine = ranked.get(declared, 1.0)
        best = min(ranked.items(), key=lambda item: item[1], default=(declared, mine))
        if (
            best[0] != declared
            and best[1] + 0.05 < mine
            and _russian_reading(data, best[0]) > _russian_reading(data, declared)
        ):
            return data.decode(best[0], errors="replace").replace("\x00", "")
        return declared_text.replace("\x00", "")
    if declared_text is not None:
        return declared_text.replace("\x00", "")
    if not ranked:
        return ""
    codec = min(ranked.items(), key=lambda item: item[1])[0]
    return data.decode(codec, errors="replace").replace("\x00", "")


_RUSSIAN_COMMON = set("оеаинтсрвлкмдпуяыьгзбчй")


def _russian_reading(data: bytes, codec: str) -> float:
    """How much text decoded with ``codec`` looks like Russian: common lowercase letters, few case flips."""
    text = _decodes(data[:SAMPLE], codec) or ""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    common = sum(1 for c in letters if c in _RUSSIAN_COMMON)
    flips = len(re.findall(r"[а-яё][А-ЯЁ]", text))
    return (common - 2 * flips) / len(letters)


# -- headers -------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(=\?)")


def _raw_bytes(value: str) -> bytes:
    """The header's bytes: the parser keeps 8-bit bytes as surrogate escapes."""
    return value.encode("utf-8", "surrogateescape")


def decode_header_value(value: object, hint: str | None = None) -> str:
    """Encoded words in any charset and raw 8-bit bytes (with the body's charset as a hint) as one line."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = _BETWEEN_WORDS.sub(r"\1\2", text)
    out: list[str] = []
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        out.append(_raw_text(text[position : match.start()], hint))
        out.append(_encoded_word(match))
        position = match.end()
    out.append(_raw_text(text[position:], hint))
    return re.sub(r"\s+", " ", "".join(out)).strip()


def _raw_text(segment: str, hint: str | None) -> str:
    if not segment:
        return ""
    if segment.isascii():
        return segment
    data = _raw_bytes(segment)
    if _decodes(data, "utf_8") is not None:
        return data.decode("utf_8")
    return decode_bytes(data, hint)


def _encoded_word(match: re.Match[str]) -> str:
    charset, kind, payload = match.group(1), match.group(2).lower(), match.group(3)
    charset = charset.split("*", 1)[0]
    try:
        if kind == "b":
            data = base64.b64decode(payload + "=" * (-len(payload) % 4))
        else:
            data = quopri.decodestring(payload.replace("_", " ").encode("ascii", "replace"), header=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    return decode_bytes(data, charset)


_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*$")
"""RFC 5322 addr-spec as mail really carries it; local part and domain may be UTF-8 (RFC 6532)."""
_ANY_ADDRESS = re.compile(r"[\w.+'-]+@[^\W_][\w-]*(?:\.[\w-]+)*")


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address)) and len(address) <= 320


def parse_address(value: object, hint: str | None = None) -> tuple[str | None, str | None]:
    """(display name, address) of a From/Reply-To value: the address is found in the raw header first, so a
    comma or an angle bracket inside an encoded display name cannot hide it."""
    raw = "" if value is None else (value if isinstance(value, str) else str(value))
    if not raw.strip():
        return None, None
    pairs = getaddresses([raw])
    for name, address in pairs:
        address = _raw_text(address, hint).strip().strip("<>").strip()
        if valid_address(address):
            display = decode_header_value(name, hint).strip(" \"'")
            return (None if not display or valid_address(display) else display), address.lower()
    found = _ANY_ADDRESS.search(_raw_text(raw, hint))
    if found and valid_address(found.group(0)):
        rest = decode_header_value(raw.replace(found.group(0), ""), hint).strip(" <>\"',")
        return rest or None, found.group(0).lower()
    names = [decode_header_value(name, hint).strip(" \"'") for name, _ in pairs]
    return next((n for n in names if n), None) or decode_header_value(raw, hint).strip(" <>") or None, None


_HEADER_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
_OBSOLETE_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_MULTIPART_WITHOUT_BOUNDARY = re.compile(rb"^content-type:\s*multipart/[\w.+-]+\s*;?\s*\r?$", re.I)
_BOUNDARY_PARAM = re.compile(rb"boundary\s*=", re.I)
_BOUNDARY_LINE = re.compile(rb"^--([^\s-][^\s]{0,69}?)(?:--)?\s*$", re.M)
"""RFC 822's obsolete syntax allows blanks before the colon; the parser does not."""
_FORWARD_LINE = re.compile(
    rb"^\s*(-{2,}|>)?\s*(forwarded message|original message|begin forwarded message|"
    rb"\xd0\x9f\xd0\xb5\xd1\x80\xd0\xb5\xd1\x81\xd1\x8b\xd0\xbb\xd0\xb0\xd0\xb5\xd0\xbc\xd0\xbe\xd0\xb5)",
    re.I,
)


def repair(raw: bytes) -> bytes:
    """Mend the header block so the standard parser keeps every header: drop a forward marker or blank lines
    above it, close blanks before a colon, and give a continuation line that lost its leading whitespace its
    space back (a line after the last header is the body that lost its separating blank line)."""
    text = raw
    if text.startswith(b"From ") and b"\n" in text:
        text = text.split(b"\n", 1)[1]
    lines = text.split(b"\n")
    start = 0
    while start < len(lines) and start < 5 and (not lines[start].strip() or _FORWARD_LINE.match(lines[start])):
        start += 1
    if start and start < len(lines) and _HEADER_NAME.match(lines[start]):
        lines = lines[start:]
    end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    headed = [i for i in range(end) if _HEADER_NAME.match(lines[i]) or _OBSOLETE_NAME.match(lines[i])]
    last_header = headed[-1] if headed else -1
    repaired: list[bytes] = []
    for index, line in enumerate(lines):
        if index >= end:
            repaired.extend(lines[index:])
            break
        if _MULTIPART_WITHOUT_BOUNDARY.match(line):
            following = lines[index + 1] if index + 1 < end else b""
            if not (following[:1].isspace() and _BOUNDARY_PARAM.search(following)):
                found = _BOUNDARY_LINE.search(b"\n".join(lines[end:]))
                if found:
                    ending = b"\r" if line.endswith(b"\r") else b""
                    line = line.rstrip(b"\r").rstrip(b"; ") + b'; boundary="' + found.group(1) + b'"' + ending
        if _OBSOLETE_NAME.match(line) and not _HEADER_NAME.match(line):
            line = _OBSOLETE_NAME.sub(rb"\1:", line, count=1)
        elif index and not _HEADER_NAME.match(line) and not line[:1].isspace():
            if index > last_header:
                repaired.extend([b"", *lines[index:]])
                break
            line = b" " + line
        repaired.append(line)
    return b"\n".join(repaired)


def _ids(value: str | None) -> list[str]:
    """Message ids of a header; a bare id without angle brackets is taken and given them."""
    if not value:
        return []
    found = re.findall(r"<[^<>\s]+>", value)
    if found:
        return found
    bare = value.strip().strip("<>").strip()
    return [f"<{bare}>"] if bare and " " not in bare and len(bare) < 500 else []


def _get(msg: Message, name: str) -> str | None:
    """A header's raw value (8-bit bytes kept as surrogate escapes), not the standard library's lossy one."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return value if isinstance(value, str) else str(value)
    return None


# -- text ----------------------------------------------------------------------------


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


FORWARD_MARKERS = re.compile(
    r"^\s*(?:-{2,}|_{2,})?\s*(?:forwarded message|forwarded by|begin forwarded message|пересылаемое сообщение|"
    r"пересланное сообщение|начало переадресованного сообщения|weitergeleitete nachricht|message transféré|"
    r"mensaje reenviado)\b.*$",
    re.I,
)
REPLY_MARKERS = re.compile(
    r"^\s*(?:-{2,}|_{2,})\s*(?:original message|исходное сообщение|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|messaggio originale)\s*(?:-{2,}|_{2,})?\s*$",
    re.I,
)
ATTRIBUTIONS = [
    re.compile(r"^\s*On\b.{3,250}\bwrote:\s*$", re.I),
    re.compile(r"^.{0,250}\b(?:написал|написала|написал\(а\)|пишет|написав|написала\(а\))\s*:\s*$", re.I),
    re.compile(r"^\s*Am\b.{3,250}\bschrieb\b.{0,200}:\s*$", re.I),
    re.compile(r"^\s*Le\b.{3,250}\ba écrit\s*:\s*$", re.I),
    re.compile(r"^\s*El\b.{3,250}\bescribió\s*:\s*$", re.I),
    re.compile(r"^\s*Il\b.{3,250}\bha scritto\s*:\s*$", re.I),
    re.compile(r"^\s*Op\b.{3,250}\bschreef\b.{0,200}:\s*$", re.I),
    re.compile(r"^\s*W dniu\b.{3,250}\bnapisał(?:a)?\b.{0,200}:\s*$", re.I),
    re.compile(r"^.{0,120}\d{1,2}[:.]\d{2}.{0,160}<[^<>\s@]+@[^<>\s]+>\s*:\s*$"),
    re.compile(r"^.{0,160}\bот\b.{1,120}<[^<>\s@]+@[^<>\s]+>\s*:\s*$", re.I),
]
_QUOTED_HEADER = re.compile(
    r"^\s*\*?(?:from|sent|to|cc|subject|date|от|отправлено|кому|копия|тема|дата|von|gesendet|an|betreff|de|envoyé|"
    r"à|objet)\*?\s*:\s*\S",
    re.I,
)


def _attribution(lines: list[str], index: int) -> bool:
    line = lines[index].strip()
    if any(p.match(line) for p in ATTRIBUTIONS):
        return True
    if index + 1 < len(lines):
        joined = f"{line} {lines[index + 1].strip()}"
        return bool(line) and any(p.match(joined) for p in ATTRIBUTIONS[:1] + ATTRIBUTIONS[2:8])
    return False


def _header_block(lines: list[str], index: int) -> bool:
    """An Outlook-style quoted reply header: at least two header-like lines in a row, one of them From/От."""
    block = []
    for line in lines[index : index + 6]:
        if not line.strip():
            break
        if not _QUOTED_HEADER.match(line):
            break
        block.append(line.strip().lower())
    return len(block) >= 2 and any(b.startswith(("from", "*from", "от", "von", "de")) for b in block)


def strip_quoted(text: str) -> str:
    """The new part of a letter: quoted replies removed, forwarded letters kept.

    A reply's quote starts at an attribution line («On … wrote:», «… написал(а):», «Am … schrieb …:»), an
    «Original Message» marker or an Outlook header block; lines starting with ``>`` are quotes too. Under a
    forward marker everything is kept: a forwarded letter is often the complaint itself. A lone line that
    starts with «From:» is text."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    forwarding = False
    for index, line in enumerate(lines):
        stripped = line.strip()
        if FORWARD_MARKERS.match(stripped):
            forwarding = True
            kept.append(line.rstrip())
            continue
        if forwarding:
            kept.append(line.rstrip())
            continue
        if REPLY_MARKERS.match(stripped) or _attribution(lines, index) or _header_block(lines, index):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line.rstrip())
    result = "\n".join(kept).strip()
    return result or text.strip()


# -- machines ------------------------------------------------------------------------

_LOCAL_PARTS = re.compile(
    r"^(?:mailer-daemon|postmaster|mail-daemon|maildaemon|bounces?|bounce[-+.].*|.*-bounces?|.*-request|owner-.*|"
    r".*-owner|.*no[-_.]?reply.*|.*do[-_.]?not[-_.]?reply.*|donotreply|notifications?|notify|cron|"
    r"listserv|majordomo|mailman)$",
    re.I,
)
_TRACKERS = (
    "X-GitHub-Reason",
    "X-GitLab-Project",
    "X-Redmine-Project",
    "X-JIRA-FingerPrint",
    "X-Bugzilla-Product",
    "X-Trac-Ticket-ID",
    "X-Phabricator-Sent-This-Message",
    "X-Cron-Env",
    "X-Mailman-Version",
)


def automatic_reason(msg: Message, sender: str | None, subject: str) -> str | None:
    """Why a letter is machine-generated: never answer those automatically (RFC 3834 and the usual signs)."""
    auto = (_get(msg, "Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    content_type = (msg.get_content_type() or "").lower()
    if content_type == "multipart/report":
        return "delivery status report (multipart/report)"
    if content_type == "multipart/digest":
        return "list digest (multipart/digest)"
    for part in msg.walk():
        if str(part.get_content_type()).lower() in ("message/delivery-status", "message/disposition-notification"):
            return "delivery status notification"
    local = (sender or "").split("@")[0].lower()
    if local and _LOCAL_PARTS.match(local):
        return f"sent by {local}@"
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
    for header in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Failed-Recipients", "X-Autogenerated"):
        if _get(msg, header) is not None:
            return header
    for header in _TRACKERS:
        if _get(msg, header) is not None:
            return f"notification ({header})"
    low = subject.lower()
    if re.match(r"^cron\s*<", low):
        return "cron job output"
    if re.search(r"\bdigest\b.*\bvol(?:ume)?\b|\bдайджест\b", low):
        return "list digest"
    return None


# -- the letter ----------------------------------------------------------------------


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


_RAW_NAME = re.compile(r"""(?:^|;)\s*(?:file)?name\s*=\s*(?:"([^"]*)"|([^;\s]+))""", re.I)


def _filename(part: Message, hint: str | None) -> str | None:
    for header in ("Content-Disposition", "Content-Type"):
        value = _get(part, header) or ""
        if not value.isascii():
            found = _RAW_NAME.search(value)
            if found:
                return decode_header_value(found.group(1) or found.group(2), hint) or None
    raw = part.get_param("filename", header="content-disposition") or part.get_param("name")
    if raw is None:
        return None
    if isinstance(raw, tuple):
        charset, _, value = raw
        data = value.encode("latin-1", "surrogateescape") if isinstance(value, str) else bytes(value)
        return decode_bytes(data, charset or "utf-8") or None
    return decode_header_value(str(raw), hint) or None


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    return decode_bytes(payload, part.get_content_charset())


@dataclass
class _Body:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[MailAttachment] = field(default_factory=list)
    embedded: list[str] = field(default_factory=list)


def _walk(part: Message, body: _Body, hint: str | None, depth: int = 0) -> None:
    if depth > 20:
        return
    content_type = (part.get_content_type() or "text/plain").lower()
    if content_type == "message/rfc822":
        _embedded(part, body, hint, depth)
        return
    if part.is_multipart():
        children = part.get_payload()
        for child in children if isinstance(children, list) else []:
            if isinstance(child, Message):
                _walk(child, body, hint, depth + 1)
        return
    if content_type in ("message/delivery-status", "text/rfc822-headers", "message/disposition-notification"):
        return
    disposition = (_get(part, "Content-Disposition") or "").split(";")[0].strip().lower()
    filename = _filename(part, hint)
    if disposition == "attachment" or (filename and not content_type.startswith("text/")):
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            body.attachments.append(
                MailAttachment(filename or "attachment", content_type, data, inline=disposition == "inline")
            )
        return
    if content_type.startswith("multipart/"):
        _lost_boundary(part, body, hint, depth)
    elif content_type == "text/plain":
        body.plain.append(_part_text(part))
    elif content_type == "text/html":
        body.html.append(_part_text(part))
    elif content_type.startswith("image/"):
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            body.attachments.append(
                MailAttachment(filename or f"image.{content_type.split('/')[1]}", content_type, data, inline=True)
            )


def _lost_boundary(part: Message, body: _Body, hint: str | None, depth: int) -> None:
    """A multipart whose boundary is missing or wrong: the boundary its parts actually use, else its text."""
    payload = part.get_payload(decode=False)
    text = payload if isinstance(payload, str) else ""
    found = re.search(r"^--([^\s-][^\s]{0,69}?)(?:--)?\s*$", text, re.M)
    if found and depth < 20:
        head = f'Content-Type: {part.get_content_type()}; boundary="{found.group(1)}"\r\n\r\n'
        inner = email.message_from_bytes((head + text).encode("utf-8", "surrogateescape"), policy=email.policy.compat32)
        if inner.is_multipart():
            _walk(inner, body, hint, depth + 1)
            return
    body.plain.append(_part_text(part))


def _embedded(part: Message, body: _Body, hint: str | None, depth: int) -> None:
    """A letter attached to a letter: kept as an .eml file, and its words added to the text."""
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload and isinstance(payload[0], Message) else None
    if inner is None:
        return
    data = _letter_bytes(inner)
    subject = decode_header_value(_get(inner, "Subject"), hint)
    name = re.sub(r'[\\/:*?"<>|\r\n]+', " ", subject).strip()[:80] or "письмо"
    body.attachments.append(MailAttachment(f"{name}.eml", "message/rfc822", data))
    inner_body = _Body()
    _walk(inner, inner_body, hint, depth + 1)
    text = "\n\n".join(t.strip() for t in inner_body.plain if t.strip()) or "\n\n".join(
        html_to_text(h) for h in inner_body.html
    )
    sender_name, sender = parse_address(_get(inner, "From"), hint)
    who = f"{sender_name} <{sender}>" if sender_name else sender
    header = "\n".join(
        line
        for line in ("Вложенное письмо:", f"От: {who}" if who else "", f"Тема: {subject}" if subject else "")
        if line
    )
    body.embedded.append(f"{header}\n\n{text.strip()}".strip())
    body.attachments.extend(inner_body.attachments)


def _letter_bytes(letter: Message) -> bytes:
    """An embedded letter as a file; when the generator refuses its headers, its raw headers and body."""
    try:
        return letter.as_bytes(policy=email.policy.compat32)
    except Exception:
        head = "\r\n".join(f"{k}: {v}" for k, v in letter.raw_items())
        payload = letter.get_payload()
        body = payload if isinstance(payload, str) else ""
        return f"{head}\r\n\r\n{body}".encode("utf-8", "surrogateescape")


def _body_charset(msg: Message) -> str | None:
    """The first declared charset of the letter's text: old clients write raw 8-bit headers in it too."""
    for part in msg.walk():
        charset = part.get_content_charset()
        if charset and codec_of(charset):
            return charset
    return None


def parse_mail(raw: bytes, max_text: int = MAX_TEXT) -> ParsedMail:
    """Everything the hub needs from one RFC 5322 message. Never raises on malformed input."""
    msg = email.message_from_bytes(repair(raw), policy=email.policy.compat32)
    hint = _body_charset(msg)
    sender_name, sender = parse_address(_get(msg, "From"), hint)
    if sender is None:
        for header in ("Sender", "Return-Path"):
            name, found = parse_address(_get(msg, header), hint)
            if found:
                sender_name, sender = sender_name or name, found
                break
    _, reply_to = parse_address(_get(msg, "Reply-To"), hint)
    subject = decode_header_value(_get(msg, "Subject"), hint)
    body = _Body()
    _walk(msg, body, hint)
    text = "\n\n".join(t.strip() for t in body.plain if t.strip())
    if not text and body.html:
        text = "\n\n".join(html_to_text(h) for h in body.html)
    text = strip_quoted(text.replace("\r\n", "\n"))
    if body.embedded:
        text = "\n\n".join(t for t in (text, *body.embedded) if t)
    message_id = _ids(_get(msg, "Message-ID") or _get(msg, "Message-Id"))
    return ParsedMail(
        message_id=message_id[0] if message_id else None,
        subject=subject,
        sender_email=sender,
        sender_name=sender_name,
        reply_to=reply_to,
        date=_safe_date(_get(msg, "Date")),
        text=text[:max_text],
        in_reply_to=_ids(_get(msg, "In-Reply-To"))[:20],
        references=_ids(_get(msg, "References"))[:100],
        attachments=body.attachments,
        automatic=automatic_reason(msg, sender, subject),
        headers={k: decode_header_value(v, hint)[:500] for k, v in list(msg.raw_items())[:60]},
    )


def parse_headers_only(raw: bytes) -> ParsedMail:
    """A letter too large to read whole: its headers (from the first bytes), so it can be shown and answered."""
    head = raw[: 256 * 1024]
    end = head.find(b"\r\n\r\n")
    end = end if end >= 0 else head.find(b"\n\n")
    mail = parse_mail(head[: end if end >= 0 else len(head)] + b"\r\n\r\n")
    mail.text = ""
    mail.too_large = True
    return mail
