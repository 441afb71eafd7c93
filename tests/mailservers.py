"""Real mail servers on loopback for the tests: Dovecot (Debian's dovecot-imapd) and an aiosmtpd SMTP sink."""

from __future__ import annotations

import email
import email.policy
import grp
import imaplib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from app.embedded import free_port, port_open

DOVECOT = "/usr/sbin/dovecot"


@dataclass
class Dovecot:
    """A Dovecot IMAP server with one user, a Maildir in a temp directory and a non-root mail uid."""

    user: str = "ads@uk.example"
    password: str = "imap-secret"
    port: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="adshub-dovecot-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"imap://{self.user.replace('@', '%40')}:{self.password}@127.0.0.1:{self.port}/INBOX"

    def start(self) -> None:
        if not Path(DOVECOT).exists():
            pytest.fail("Debian's dovecot-imapd is not installed (make test installs it)")
        self.port = free_port()
        mail_user = pwd.getpwnam("nobody")
        mail_group = grp.getgrgid(mail_user.pw_gid)
        for sub in ("run", "state", "mail", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("mail", "home"):
            os.chown(self.root / sub, mail_user.pw_uid, mail_user.pw_gid)
        os.chmod(self.root, 0o755)
        (self.root / "users").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        config = self.root / "dovecot.conf"
        config.write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{self.root}/mail/%u
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/users
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_group.gr_gid} home={self.root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                pytest.fail(f"dovecot exited: {err}")
            if port_open("127.0.0.1", self.port):
                return
            time.sleep(0.1)
        pytest.fail("dovecot did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def session(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port)
        imap.login(self.user, self.password)
        return imap

    def append(self, raw: bytes, mailbox: str = "INBOX") -> None:
        imap = self.session()
        try:
            imap.create(mailbox)
            typ, data = imap.append(mailbox, None, None, raw)
            assert typ == "OK", data
        finally:
            imap.logout()

    def seen_flags(self, mailbox: str = "INBOX") -> dict[int, bool]:
        imap = self.session()
        try:
            imap.select(mailbox)
            _typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
            flags = {}
            for line in data:
                if not line:
                    continue
                text = line.decode() if isinstance(line, bytes) else str(line)
                uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
                flags[uid] = "\\Seen" in text
            return flags
        finally:
            imap.logout()


class _Sink:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))  # type: ignore[attr-defined]
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server (aiosmtpd) that keeps what the hub sends."""

    def __init__(self) -> None:
        self.handler = _Sink()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Message]:
        return self.handler.messages

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def letter(
    subject: str,
    body: str,
    *,
    sender: str = "Иванова Мария <maria@example.ru>",
    message_id: str = "<m1@example.ru>",
    charset: str = "utf-8",
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "ads@uk.example"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = "Tue, 24 Nov 2026 03:12:00 +0300"
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(body, charset=charset)
    return msg.as_bytes()
