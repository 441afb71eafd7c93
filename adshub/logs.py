"""Structured logs: one JSON object per line, carrying the message id and the
request number when the code knows them (``extra={"message_id": ...}``).
Secrets never reach the log: URLs with credentials are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@", re.I)
_TOKENS = re.compile(
    r"(bot\d+:)[A-Za-z0-9_-]{20,}|(access_token=)[^&\s]+|(vpbx_api_key=)[^&\s]+|(sign=)[0-9a-f]{16,}", re.I
)
_FIELDS = ("message_id", "request_number", "channel", "conversation_id")


def mask_secrets(text: str) -> str:
    text = _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
    return _TOKENS.sub(lambda m: (m.group(1) or m.group(2) or m.group(3) or m.group(4)) + "***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{n}={getattr(record, n)}" for n in _FIELDS if getattr(record, n, None) is not None)
        base = super().format(record)
        return mask_secrets(f"{base} {extras}".rstrip())


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiormq", "aio_pika", "pymongo", "aiogram.event", "vk_api"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
