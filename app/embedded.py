"""The embedded database for a small company and for tests: SecantusDB, a
MongoDB wire-protocol server over WiredTiger, started as a child process when
``ADSHUB_MONGO_URL`` points at loopback and nothing answers there.
Production uses real MongoDB (compose.yaml); nothing here is needed then.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from adshub.errors import ConfigurationError

log = logging.getLogger("adshub.embedded")


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedDatabase:
    """A SecantusDB child process with its data in ``storage``; stopped on exit."""

    def __init__(self, host: str, port: int, storage: Path, cache_size: str = "512M") -> None:
        self.host = host
        self.port = port
        self.storage = storage
        self.cache_size = cache_size
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.storage.parent / "secantus.log"

    def start(self, timeout: float = 60.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the server process; it dies with this process even when this one is killed with -9."""
        try:
            import secantus  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError(
                "nothing answers at ADSHUB_MONGO_URL and the embedded database is not installed: "
                "pip install 'adshub[embedded]' or point ADSHUB_MONGO_URL at a MongoDB server"
            ) from exc
        self.storage.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "secantus",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--storage-path",
            str(self.storage),
            "--log-level",
            "WARNING",
            "--cache-size",
            self.cache_size,
        ]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=_parent_death_signal(),
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        if self.process is None:
            raise RuntimeError("spawn() the embedded database before waiting for it")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(f"the embedded database exited at start; see {self.log_path}")
            if port_open(self.host, self.port):
                log.info("embedded database (SecantusDB) serving %s with data in %s", self.url, self.storage)
                return
            time.sleep(0.1)
        self.stop()
        raise ConfigurationError(f"the embedded database did not start within {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None


async def ensure_database(mongo_url: str, data_dir: Path, enabled: bool = True) -> EmbeddedDatabase | None:
    """Start the embedded database when the configured loopback URL has no server behind it."""
    parts = urlsplit(mongo_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 27017
    loopback = host in ("localhost", "127.0.0.1", "::1")
    if not loopback or not enabled:
        return None
    if await asyncio.to_thread(port_open, host, port):
        return None
    db = EmbeddedDatabase("127.0.0.1" if host == "localhost" else host, port, data_dir / "db")
    db.spawn()
    await asyncio.to_thread(db.wait_ready)
    return db


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, have the kernel send SIGTERM to the server when the thread that started it dies.

    Only from the main thread: the signal follows the starting thread, not the process."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return arm
