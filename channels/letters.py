"""Reading letters off the event loop, bounded in size and time.

A small letter is read in a worker thread. A large one (a 20 MB photo report)
is read in a separate process, so that the hub's event loop never waits for it
and never competes for the interpreter lock with it. A letter over the size the
hub reads, or one whose reading takes too long, is kept whole as a file and
shown to dispatchers as too large: only its headers are read.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from multiprocessing.pool import Pool

from channels.mime import ParsedMail, parse_headers_only, parse_mail

log = logging.getLogger("adshub.channels.email")

IN_THREAD = 256 * 1024
"""Letters up to this size are read in a thread: starting a process would cost more than reading them."""


def read_letter(raw: bytes, max_bytes: int) -> ParsedMail:
    """The letter, or only its headers when it is over ``max_bytes``; pure, for a worker thread or process."""
    if len(raw) > max_bytes:
        return parse_headers_only(raw)
    return parse_mail(raw)


class LetterReader:
    """Reads letters without blocking the caller's event loop; one reading process at a time, restarted
    when a reading takes longer than ``timeout``."""

    def __init__(self, max_bytes: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._pool: Pool | None = None

    async def read(self, raw: bytes) -> ParsedMail:
        if len(raw) <= IN_THREAD or len(raw) > self.max_bytes:
            return await asyncio.to_thread(read_letter, raw, self.max_bytes)
        pool = self._pool or self._start()
        pending = pool.apply_async(read_letter, (raw, self.max_bytes))
        try:
            return await asyncio.to_thread(pending.get, self.timeout)
        except multiprocessing.TimeoutError:
            log.warning("a %.1f MB letter took over %.0fs to read; keeping it whole", len(raw) / 2**20, self.timeout)
            self.close()
            return await asyncio.to_thread(parse_headers_only, raw)

    def _start(self) -> Pool:
        self._pool = multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=20)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
