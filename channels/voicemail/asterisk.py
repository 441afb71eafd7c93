"""Asterisk voicemail: ``msgNNNN.txt`` files in a voicemail context directory.

``ADSHUB_VOICEMAIL_SPOOL`` is ``…/voicemail/<context>``. Every ``msgNNNN.txt`` in a
mailbox's INBOX or Urgent folder becomes a voicemail; its transcript is
``msgNNNN.transcript.txt`` beside it (written by the site's speech-to-text), and
a transcript that arrives later is attached to the same voicemail.
"""

from __future__ import annotations

import asyncio
import configparser
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from adshub.contract import Attachment, Inbound, Sender
from adshub.errors import InvalidInput, TransientError
from channels.voicemail.calls import CHANNEL, moment, transcript_edit
from domain.phones import normalize_phone

if TYPE_CHECKING:
    from channels.voicemail import Voicemail

log = logging.getLogger("adshub.channels.voicemail.asterisk")

FOLDERS = ("INBOX", "Urgent")
RECORDING_FORMATS = ("wav", "WAV", "gsm", "wav49", "mp3", "ogg")
CALLERID_RE = re.compile(r'^\s*"?(?P<name>[^"<]*?)"?\s*<(?P<number>[^>]*)>\s*$')
TAKEN_LIMIT = 20_000
"""How many voicemails the spool cursor remembers as taken."""


@dataclass(frozen=True)
class SpoolMessage:
    key: str
    mailbox: str
    folder: str
    info: dict[str, str]
    transcript: str | None
    recording: Path | None
    path: Path


def parse_callerid(value: str) -> tuple[str | None, str | None]:
    """``"Name" <number>`` → (name, number); ``Unknown``/``Anonymous`` → no number."""
    value = (value or "").strip()
    match = CALLERID_RE.match(value)
    if match:
        name = match.group("name").strip() or None
        number = match.group("number").strip() or None
        return name, number
    if not value or value.lower() in ("unknown", "anonymous", "private", "<unknown>"):
        return None, None
    return None, value


def read_message_file(path: Path) -> dict[str, str]:
    """The ``[message]`` section of an Asterisk msgNNNN.txt. Raises InvalidInput."""
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, delimiters=("=",), comment_prefixes=(";", "#"), inline_comment_prefixes=None
    )
    try:
        parser.read_string(_read_text(path))
    except (configparser.Error, UnicodeError, OSError) as exc:
        raise InvalidInput(f"unreadable voicemail file {path.name}: {exc}") from exc
    if not parser.has_section("message"):
        raise InvalidInput(f"voicemail file {path.name} has no [message] section")
    return {k: v for k, v in parser.items("message")}


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    for charset in ("utf-8", "cp1251"):
        try:
            return data.decode(charset)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def scan_spool(spool: Path) -> list[SpoolMessage]:
    """Every voicemail in the context directory's INBOX and Urgent folders (blocking file I/O)."""
    found: list[SpoolMessage] = []
    if not spool.is_dir():
        return found
    for mailbox in sorted(p for p in spool.iterdir() if p.is_dir()):
        for folder in FOLDERS:
            directory = mailbox / folder
            if not directory.is_dir():
                continue
            for txt in sorted(directory.glob("msg[0-9][0-9][0-9][0-9].txt")):
                try:
                    info = read_message_file(txt)
                except InvalidInput as exc:
                    log.warning("%s", exc)
                    continue
                stem = txt.with_suffix("")
                transcript_path = stem.with_name(stem.name + ".transcript.txt")
                transcript = _read_text(transcript_path).strip() if transcript_path.is_file() else None
                recording = next(
                    (stem.with_suffix(f".{fmt}") for fmt in RECORDING_FORMATS if stem.with_suffix(f".{fmt}").is_file()),
                    None,
                )
                fallback = f"{info.get('origtime', '0')}-{mailbox.name}-{info.get('callerid', '')}"
                key = re.sub(r"[^A-Za-z0-9_-]", "_", info.get("msg_id") or fallback)
                found.append(
                    SpoolMessage(
                        key=key,
                        mailbox=mailbox.name,
                        folder=folder,
                        info=info,
                        transcript=transcript or None,
                        recording=recording,
                        path=txt,
                    )
                )
    return found


def spool_inbound(message: SpoolMessage, context: str) -> Inbound:
    name, number = parse_callerid(message.info.get("callerid", ""))
    phone = normalize_phone(number) if number else None
    caller = phone or number or "anonymous"
    received = moment(message.info.get("origtime"))
    attachments = []
    if message.recording is not None:
        attachments.append(
            Attachment(
                kind="audio",
                name=message.recording.name,
                location=str(message.recording),
                meta={"duration": message.info.get("duration")},
            )
        )
    return Inbound(
        id=f"{CHANNEL}:asterisk:{context}:{message.key}",
        channel=CHANNEL,
        address=caller,
        sender=Sender(id=caller, name=name, phone=phone),
        kind="voicemail",
        text=message.transcript or "",
        attachments=attachments,
        received_at=received,
        answerable=False,
        payload={
            "source": "asterisk",
            "mailbox": message.mailbox,
            "folder": message.folder,
            "urgent": message.folder == "Urgent" or message.info.get("flag", "").lower() == "urgent",
            "duration": message.info.get("duration"),
            "file": str(message.path),
        },
        raw=message.info,
    )


def _bounded(taken: dict[str, bool], limit: int = TAKEN_LIMIT) -> dict[str, bool]:
    if len(taken) <= limit:
        return taken
    return dict(list(taken.items())[-limit:])


class AsteriskSpool:
    """Watches the spool; what was taken (and whether with its transcript) is kept in a journal cursor."""

    def __init__(self, channel: Voicemail, spool: Path, poll_seconds: float) -> None:
        self.channel = channel
        self.spool = spool
        self.poll_seconds = poll_seconds

    @property
    def cursor(self) -> str:
        return f"asterisk:{self.spool}"

    def routes(self) -> list[web.AbstractRouteDef]:
        return []

    async def open(self) -> None:
        self.channel.run(self._watch(), "asterisk-spool")

    async def _watch(self) -> None:
        while not self.channel.stopping:
            try:
                await self.scan_once()
            except TransientError as exc:
                log.warning("broker unavailable; voicemail will be taken on the next scan: %s", exc)
            except Exception:
                log.exception("voicemail spool scan failed")
            await self.channel.sleep(self.poll_seconds)

    async def scan_once(self) -> None:
        context = self.spool.name
        journal = self.channel.journal
        messages = await asyncio.to_thread(scan_spool, self.spool)
        cursor = await journal.get_cursor(self.cursor)
        taken: dict[str, bool] = dict(cursor.get("taken") or {})
        for message in messages:
            state = taken.get(message.key)
            try:
                inbound = spool_inbound(message, context)
            except ValueError as exc:
                log.warning("voicemail %s refused: %s", message.path, exc)
                taken[message.key] = True
            else:
                if state is None:
                    await self.channel.emit(inbound)
                    taken[message.key] = bool(message.transcript)
                elif state is False and message.transcript:
                    await self.channel.emit(
                        transcript_edit(inbound.model_copy(update={"text": ""}), message.transcript)
                    )
                    taken[message.key] = True
                else:
                    continue
            await journal.set_cursor(self.cursor, {"taken": _bounded(taken)})
