"""Structured logs: one JSON object per line, carrying the message id and the
request number when the code knows them (``extra={"message_id": ...}``).

Secrets never reach the log: URLs with credentials and API tokens are masked,
and what a part registers with ``redact`` (the web chat's session ids, the only
credential for a resident's history) is replaced by a short hash. A log call
whose arguments do not fit its message is still written, masked, never raw.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@", re.I)
_TOKENS = re.compile(
    r"(bot\d+:)[A-Za-z0-9_-]{20,}|(access_token=)[^&\s]+|(vpbx_api_key=)[^&\s]+|(sign=)[0-9a-f]{16,}", re.I
)
_FIELDS = ("message_id", "request_number", "channel", "conversation_id")
_REDACTIONS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = []


def opaque(value: str) -> str:
    """A stable stand-in for a value that must not be logged: the same value always reads the same."""
    return "#" + hashlib.sha256(value.encode()).hexdigest()[:12]


def redact(pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str] | None = None) -> None:
    """Never write what ``pattern`` matches as it is; by default it becomes its ``opaque`` hash."""
    if all(p.pattern != pattern.pattern for p, _ in _REDACTIONS):
        _REDACTIONS.append((pattern, replace or (lambda m: opaque(m.group(0)))))


def mask_secrets(text: str) -> str:
    text = _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
    text = _TOKENS.sub(lambda m: (m.group(1) or m.group(2) or m.group(3) or m.group(4)) + "***", text)
    for pattern, replace in _REDACTIONS:
        text = pattern.sub(replace, text)
    return text


def message_of(record: logging.LogRecord) -> str:
    """The record's message; a call whose arguments do not fit its format is shown, not lost or raw."""
    try:
        return record.getMessage()
    except Exception:
        return f"{record.msg} {record.args!r} [log call with wrong arguments]"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_secrets(message_of(record)),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = mask_secrets(str(value))
        if record.exc_info:
            entry["error"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{n}={getattr(record, n)}" for n in _FIELDS if getattr(record, n, None) is not None)
        record.message = message_of(record)
        stamp = self.formatTime(record)
        base = f"{stamp} {record.levelname} {record.name}: {record.message}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return mask_secrets(f"{base} {extras}".rstrip())


def configure_logging(level: str = "INFO", fmt: str = "json", handler: logging.Handler | None = None) -> None:
    """The hub's logging: one handler on the root (stderr unless given), chatty libraries at WARNING."""
    handler = handler or logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiormq", "aio_pika", "pymongo", "aiogram.event", "vk_api"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
