"""Search over the whole journal: an inverted index of requests and people, kept in memory and
brought up to date from the journal before every search.

Why in memory: the embedded server answers an indexed equality on a multikey field, but sorts every
match before it limits — a common word among 100,000 requests took 0.6–2.6 s — and it has no text
indexes. The journal stays the truth: the index reads what changed since its last look (``updated_at``,
indexed) and can be dropped at any time; a new process builds it on its first search.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.search import Term, contact_terms, read_query, request_terms
from journal.documents import RequestDoc
from journal.repository import Journal

REQUEST_FIELDS = {"text": 1, "address.key": 1, "address.text": 1, "contact": 1, "contact_id": 1, "registered_at": 1}
CONTACT_FIELDS = {"name": 1, "phones": 1, "emails": 1}
OVERLAP = timedelta(seconds=5)
WINDOW_DOCUMENTS = 2000
FIRST_WINDOW = timedelta(hours=1)
NARROWEST_WINDOW = timedelta(minutes=1)
WIDEST_WINDOW = timedelta(days=7)
OLDEST = datetime(2000, 1, 1, tzinfo=UTC)
"""How far back each refresh looks again: writes of the same moment may commit out of order."""


@dataclass
class _Postings:
    """Term → ids, and each id's terms (to take them out when the document changes)."""

    by_term: dict[str, set[str]] = field(default_factory=dict)
    of_id: dict[str, frozenset[str]] = field(default_factory=dict)
    _sorted: list[str] = field(default_factory=list)
    _dirty: bool = False

    def put(self, key: str, terms: Iterable[str]) -> None:
        fresh = frozenset(terms)
        old = self.of_id.get(key, frozenset())
        if old == fresh:
            return
        for term in old - fresh:
            ids = self.by_term.get(term)
            if ids is not None:
                ids.discard(key)
                if not ids:
                    del self.by_term[term]
                    self._dirty = True
        for term in fresh - old:
            ids = self.by_term.get(term)
            if ids is None:
                self.by_term[term] = {key}
                self._dirty = True
            else:
                ids.add(key)
        self.of_id[key] = fresh

    def find(self, wanted: Term) -> set[str]:
        found: set[str] = set()
        for exact in (wanted.value, *wanted.alternatives):
            found |= self.by_term.get(exact, set())
        if wanted.prefix:
            if self._dirty:
                self._sorted = sorted(self.by_term)
                self._dirty = False
            start = bisect.bisect_left(self._sorted, wanted.value)
            for term in self._sorted[start:]:
                if not term.startswith(wanted.value):
                    break
                found |= self.by_term.get(term, set())
        return found


@dataclass(frozen=True)
class SearchResult:
    requests: list[RequestDoc]
    total: int
    seconds: float


class SearchIndex:
    """Requests found by their own terms or by their person's (name, phones, mail)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.requests = _Postings()
        self.contacts = _Postings()
        self.registered: dict[str, datetime] = {}
        self.contact_of: dict[str, str] = {}
        self.requests_of: dict[str, set[str]] = {}
        self._seen: dict[str, datetime] = {}
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read what changed in the journal since the last look (everything, the first time).

        The first read leaves tens of millions of long-lived sets and strings at a million requests; frozen
        out of the garbage collector's reach, its full passes no longer walk them (seconds each, during
        which no page is served)."""
        async with self._lock:
            now = datetime.now(UTC)
            first = not self._seen
            await self._read("requests", REQUEST_FIELDS, self._put_request, now)
            await self._read("contacts", CONTACT_FIELDS, self._put_contact, now)
            if first:
                gc.freeze()

    async def _read(self, name: str, fields: dict[str, int], put: Any, now: datetime) -> None:
        since = self._seen.get(name)
        collection = self.journal.db[name]
        projection = {**fields, "updated_at": 1}
        if since:
            async for doc in collection.find({"updated_at": {"$gte": since - OVERLAP}}, projection).batch_size(2000):
                put(doc)
        else:
            await self._read_back(collection, projection, put, now)
        self._seen[name] = now

    async def _read_back(self, collection: Any, projection: dict[str, int], put: Any, now: datetime) -> None:
        """The first read, newest first in bounded windows of the ``updated_at`` index until every document
        is seen. The embedded server reads an unbounded find (or a sort under a limit) whole before its
        first batch and answers nothing else meanwhile, over a minute at a million requests; a bounded
        range of an index it serves in milliseconds. A window widens over quiet stretches and narrows
        over busy ones; whatever changes during the walk the next refresh reads."""
        total = await collection.estimated_document_count()
        high = now + OVERLAP
        queries: list[dict[str, Any]] = [{"updated_at": {"$gte": high}}, {"updated_at": None}]
        seen = 0
        for query in queries:
            async for doc in collection.find(query, projection).batch_size(2000):
                put(doc)
                seen += 1
        width = FIRST_WINDOW
        while seen < total and high > OLDEST:
            low = high - width
            found = 0
            async for doc in collection.find({"updated_at": {"$gte": low, "$lt": high}}, projection).batch_size(2000):
                put(doc)
                found += 1
            seen += found
            high = low
            if found < WINDOW_DOCUMENTS // 2:
                width = min(width * 2, WIDEST_WINDOW)
            elif found > WINDOW_DOCUMENTS * 2:
                width = max(width / 2, NARROWEST_WINDOW)

    def _put_request(self, doc: dict[str, Any]) -> None:
        number = doc["_id"]
        self.requests.put(number, request_terms(doc))
        self.registered[number] = doc.get("registered_at") or datetime.min.replace(tzinfo=UTC)
        contact = doc.get("contact_id")
        previous = self.contact_of.get(number)
        if previous and previous != contact:
            self.requests_of.get(previous, set()).discard(number)
        if contact:
            self.contact_of[number] = contact
            self.requests_of.setdefault(contact, set()).add(number)

    def _put_contact(self, doc: dict[str, Any]) -> None:
        self.contacts.put(doc["_id"], contact_terms(doc))

    def numbers(self, query: str) -> list[str]:
        """Numbers of the requests matching every condition of ``query``, the newest first."""
        conditions = read_query(query)
        if not conditions:
            return []
        found: set[str] | None = None
        for condition in conditions:
            matching = set(self.requests.find(condition))
            for contact in self.contacts.find(condition):
                matching |= self.requests_of.get(contact, set())
            found = matching if found is None else found & matching
            if not found:
                return []
        return sorted(
            found or (), key=lambda n: self.registered.get(n) or datetime.min.replace(tzinfo=UTC), reverse=True
        )

    async def search(self, query: str, limit: int = 50) -> SearchResult:
        started = time.perf_counter()
        await self.refresh()
        numbers = self.numbers(query)
        shown = numbers[:limit]
        docs = await self.journal.requests_by_number(shown)
        ordered = [docs[n] for n in shown if n in docs]
        await self.journal.with_inform(ordered)
        return SearchResult(ordered, len(numbers), time.perf_counter() - started)
