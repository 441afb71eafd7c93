"""The journal: the one owner of MongoDB (PyMongo's async API).

Collections: contacts, conversations, messages (both directions), requests,
counters, audit, dead_letters, tasks (callbacks), users, buildings, staff,
corrections, cursors, incidents, deliveries. The router's writes for many
messages at once arrive as one ``Plan`` and go out in a handful of round trips.
Everything written is idempotent under redelivery: deterministic ids, a unique
index on the source message of a request, duplicates ignored.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from gridfs import AsyncGridFSBucket, NoFile
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    NetworkTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from adshub.contract import Outbound
from adshub.errors import TransientError
from domain.clocks import Alert
from domain.deadlines import CLOCK_LABELS
from journal.documents import (
    AuditDoc,
    BookingDoc,
    BuildingDoc,
    CannedReplyDoc,
    ClockDoc,
    ContactDoc,
    ConversationDoc,
    CorrectionDoc,
    DeadLetterDoc,
    DeliveryDoc,
    DeliveryReportDoc,
    IncidentDoc,
    MessageDoc,
    PersonEventDoc,
    PresenceDoc,
    RequestDoc,
    SessionDoc,
    StaffDoc,
    StaffNoteDoc,
    TaskDoc,
    UserDoc,
)
from journal.plan import (
    Attach,
    ConversationChange,
    EditMessage,
    JoinIncident,
    LinkMessages,
    MessageChange,
    Plan,
    Rate,
    RequestChange,
    ReviseText,
)

log = logging.getLogger("adshub.journal")

T = TypeVar("T")
DUPLICATE_KEY = 11000
TRANSIENT_ERRORS = (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError, WriteConcernError)


def is_transient(exc: BaseException) -> bool:
    """A failure that a retry can cure: the database is away for now, or another writer raced us."""
    if isinstance(exc, (*TRANSIENT_ERRORS, TransientError)):
        return True
    if isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError"):
        return True
    return False


class RegistrationConflict(TransientError):
    """Another router registered the same source message at the same moment; retry the batch."""


def audit_doc(
    request: str,
    actor: str,
    action: str,
    changes: dict[str, Any],
    source: str,
    message_id: str | None = None,
    at: datetime | None = None,
    entry_id: str | None = None,
) -> AuditDoc:
    """One audit entry; a deterministic ``entry_id`` makes its write idempotent under redelivery."""
    return {
        "_id": entry_id or uuid.uuid4().hex,
        "request": request,
        "at": at or datetime.now(UTC),
        "actor": actor,
        "action": action,
        "changes": changes,
        "source": source,
        "message_id": message_id,
    }


def _collection(db: AsyncDatabase[dict[str, Any]], name: str, _shape: type[Any]) -> AsyncCollection[Any]:
    return cast(AsyncCollection[Any], db[name])


INDEX_BUILD_SECONDS = 3600.0
HEARTBEAT_TIMEOUT_MS = 20_000
"""The driver's monitor gives up on a server that does not answer its heartbeat within the connect timeout,
marks it unknown and cancels every operation in flight. The embedded server answers heartbeats between
operations: over a journal of a million requests a long read kept it from answering for more than the
5 s this was, and every page then failed at once; 20 s rides out such a read."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
IN_CHUNK = 100
"""Values one ``$in`` lists at most. The embedded server matches every document it finds against the whole
list again, so one ``$in`` of 2,000 numbers took 3.5 s where twenty of 100 take 0.4 s."""


def chunks(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


TIME_SLICES = tuple(timedelta(minutes=15 * 4**k) for k in range(9))
"""Widening slices of time a list reads one after another: 15 minutes, an hour, four hours … about two
years, then the rest. Narrow first: on a bad night a city registers hundreds of requests an hour."""


class Journal:
    """The repository of requests, conversations and everything around them."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.client = client
        self.db: AsyncDatabase[dict[str, Any]] = client[database]
        self.contacts: AsyncCollection[ContactDoc] = _collection(self.db, "contacts", ContactDoc)
        self.conversations: AsyncCollection[ConversationDoc] = _collection(self.db, "conversations", ConversationDoc)
        self.messages: AsyncCollection[MessageDoc] = _collection(self.db, "messages", MessageDoc)
        self.requests: AsyncCollection[RequestDoc] = _collection(self.db, "requests", RequestDoc)
        self.counters: AsyncCollection[dict[str, Any]] = self.db["counters"]
        self.audit: AsyncCollection[AuditDoc] = _collection(self.db, "audit", AuditDoc)
        self.dead_letters: AsyncCollection[DeadLetterDoc] = _collection(self.db, "dead_letters", DeadLetterDoc)
        self.tasks: AsyncCollection[TaskDoc] = _collection(self.db, "tasks", TaskDoc)
        self.users: AsyncCollection[UserDoc] = _collection(self.db, "users", UserDoc)
        self.sessions: AsyncCollection[SessionDoc] = _collection(self.db, "sessions", SessionDoc)
        self.buildings: AsyncCollection[BuildingDoc] = _collection(self.db, "buildings", BuildingDoc)
        self.staff: AsyncCollection[StaffDoc] = _collection(self.db, "staff", StaffDoc)
        self.corrections: AsyncCollection[CorrectionDoc] = _collection(self.db, "corrections", CorrectionDoc)
        self.cursors: AsyncCollection[dict[str, Any]] = self.db["cursors"]
        self.incidents: AsyncCollection[IncidentDoc] = _collection(self.db, "incidents", IncidentDoc)
        self.deliveries: AsyncCollection[DeliveryDoc] = _collection(self.db, "deliveries", DeliveryDoc)
        self.delivery_reports: AsyncCollection[DeliveryReportDoc] = _collection(
            self.db, "delivery_reports", DeliveryReportDoc
        )
        self.quotas: AsyncCollection[dict[str, Any]] = self.db["quotas"]
        self.bookings: AsyncCollection[BookingDoc] = _collection(self.db, "bookings", BookingDoc)
        self.booking_cells: AsyncCollection[dict[str, Any]] = self.db["booking_cells"]
        self.crew_actions: AsyncCollection[dict[str, Any]] = self.db["crew_actions"]
        """One record per executor and 30-minute cell booked (``journal.bookings``): what refuses a double booking."""
        self.transactions = False
        self._counted_years: set[int] = set()
        """Whether the server runs multi-document transactions (a replica set member, mongos, the embedded one)."""
        self.user_events: AsyncCollection[dict[str, Any]] = self.db["user_events"]
        self.login_failures: AsyncCollection[dict[str, Any]] = self.db["login_failures"]
        self.staff_notes: AsyncCollection[StaffNoteDoc] = _collection(self.db, "staff_notes", StaffNoteDoc)
        self.canned: AsyncCollection[CannedReplyDoc] = _collection(self.db, "canned_replies", CannedReplyDoc)
        self.person_events: AsyncCollection[PersonEventDoc] = _collection(self.db, "person_events", PersonEventDoc)
        self.presence: AsyncCollection[PresenceDoc] = _collection(self.db, "presence", PresenceDoc)
        self.reservations: AsyncCollection[dict[str, Any]] = self.db["number_reservations"]
        """Each registration number and the message it was reserved for (see ``reserve_numbers``)."""

    @classmethod
    def connect(cls, url: str, database: str, timeout_ms: int = 5000, retry_writes: bool | None = None) -> Journal:
        """``retry_writes=False`` for the embedded single-node server: it has no failover for a retry to
        survive, and it keeps every retryable write in a registry it scans on each write (measured at
        14% of its CPU under load). The hub's writes are idempotent and a failed batch is redelivered.
        ``None`` leaves it to the URL (the driver's default is on)."""
        options: dict[str, Any] = {} if retry_writes is None else {"retryWrites": retry_writes}
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=HEARTBEAT_TIMEOUT_MS,
            socketTimeoutMS=30_000,
            appname="adshub",
            **options,
        )
        return cls(client, database)

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> None:
        await self.db.command("ping")

    async def drop(self) -> None:
        """Remove the whole database (tests clean up after themselves)."""
        await self.client.drop_database(self.db.name)

    async def prepare(self, years: Iterable[int] = ()) -> None:
        """Indexes and counters, created at start (counters before use: see DESIGN).

        A person is found by phone through ``identities`` (``phone:+7…``), so contacts need no phone index;
        every index costs each write on the hot path. An index new to a journal of years builds over all of
        it, far longer than one request may take: the build gets ``INDEX_BUILD_SECONDS``."""
        with pymongo.timeout(INDEX_BUILD_SECONDS):
            await self._create_indexes()
        for year in {*years, datetime.now(UTC).year, datetime.now(UTC).year + 1}:
            await self.ensure_counter(year)
        with pymongo.timeout(INDEX_BUILD_SECONDS):
            await self._mark_breached()
        hello = await self.db.command("hello")
        self.transactions = bool(hello.get("setName") or hello.get("msg") == "isdbgrid")

    async def _mark_breached(self) -> None:
        """Once per journal: flag the requests written before the ``breached`` field whose clocks were
        missed, so the journal's filter finds them through its index rather than by scanning every clock."""
        marker = "migration:breached"
        if await self.counters.find_one({"_id": marker}) is not None:
            return
        missed = [{f"clocks.{name}.met": False} for name in CLOCK_LABELS]
        await self.requests.update_many({"$or": missed, "breached": {"$ne": True}}, {"$set": {"breached": True}})
        with contextlib.suppress(DuplicateKeyError):
            await self.counters.insert_one({"_id": marker, "at": datetime.now(UTC)})

    async def _create_indexes(self) -> None:
        await self.contacts.create_indexes(
            [
                IndexModel([("identities", ASCENDING)], unique=True, name="identities_unique"),
                IndexModel([("updated_at", ASCENDING)], name="changed"),
            ]
        )
        await self.conversations.create_indexes(
            [
                IndexModel([("last_message_at", DESCENDING)], name="recent"),
                IndexModel([("contact_id", ASCENDING)], name="contact"),
                IndexModel([("taken.login", ASCENDING)], name="taken", sparse=True),
                IndexModel([("active_request", ASCENDING)], name="active_request"),
                IndexModel([("waiting_since", ASCENDING)], name="waiting"),
            ]
        )
        await self.messages.create_indexes(
            [
                IndexModel([("conversation_id", ASCENDING), ("at", ASCENDING)], name="thread"),
                IndexModel([("external_ref", ASCENDING)], name="external_ref", sparse=True),
            ]
        )
        await self.requests.create_indexes(
            [
                IndexModel([("source_message_id", ASCENDING)], unique=True, name="source_unique"),
                IndexModel([("registered_at", DESCENDING)], name="registered"),
                IndexModel([("contact_id", ASCENDING)], name="contact"),
                IndexModel([("next_due_at", ASCENDING)], name="next_due", sparse=True),
                IndexModel([("address.key", ASCENDING), ("registered_at", DESCENDING)], name="address"),
                IndexModel([("incident_id", ASCENDING)], name="incident", sparse=True),
                IndexModel([("updated_at", ASCENDING)], name="changed"),
                IndexModel([("status", ASCENDING), ("registered_at", DESCENDING)], name="status"),
                IndexModel([("category", ASCENDING), ("registered_at", DESCENDING)], name="category"),
                IndexModel([("channel", ASCENDING), ("registered_at", DESCENDING)], name="channel"),
                IndexModel([("breached", ASCENDING), ("registered_at", DESCENDING)], name="breached", sparse=True),
                IndexModel([("executor.id", ASCENDING), ("status", ASCENDING)], name="executor", sparse=True),
            ]
        )
        await self.deliveries.create_indexes([IndexModel([("request_number", ASCENDING)], name="request", sparse=True)])
        await self.bookings.create_indexes(
            [
                IndexModel([("staff_id", ASCENDING), ("start", ASCENDING)], name="staff_time"),
                IndexModel([("request_number", ASCENDING)], name="request"),
            ]
        )
        await self.booking_cells.create_indexes(
            [IndexModel([("staff_id", ASCENDING), ("at", ASCENDING)], name="staff_time")]
        )
        await self.staff.create_indexes([IndexModel([("crew_key", ASCENDING)], name="crew_key", sparse=True)])
        await self.delivery_reports.create_indexes(
            [IndexModel([("channel", ASCENDING), ("final", ASCENDING), ("sent_at", ASCENDING)], name="pending")]
        )
        await self.audit.create_indexes([IndexModel([("request", ASCENDING), ("at", ASCENDING)], name="request")])
        await self.dead_letters.create_indexes([IndexModel([("at", DESCENDING)], name="recent")])
        await self.tasks.create_indexes([IndexModel([("status", ASCENDING), ("due_at", ASCENDING)], name="due")])
        await self.users.create_indexes([IndexModel([("login", ASCENDING)], unique=True, name="login_unique")])
        await self.sessions.create_indexes(
            [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expiry")]
        )
        await self.buildings.create_indexes([IndexModel([("key", ASCENDING)], unique=True, name="key_unique")])
        await self.user_events.create_indexes([IndexModel([("at", DESCENDING)], name="recent")])
        await self.login_failures.create_indexes(
            [IndexModel([("at", ASCENDING)], expireAfterSeconds=30 * 24 * 3600, name="expiry")]
        )
        await self.staff_notes.create_indexes(
            [
                IndexModel([("conversation_id", ASCENDING), ("at", ASCENDING)], name="thread", sparse=True),
                IndexModel([("shift", ASCENDING), ("at", DESCENDING)], name="shift"),
            ]
        )
        await self.person_events.create_indexes(
            [IndexModel([("contact", ASCENDING), ("at", ASCENDING)], name="person")]
        )
        await self.reservations.create_indexes(
            [IndexModel([("year", ASCENDING), ("source", ASCENDING)], unique=True, name="source_unique")]
        )
        await self.presence.create_indexes([IndexModel([("at", ASCENDING)], expireAfterSeconds=90, name="expiry")])
        await self.incidents.create_indexes(
            [
                IndexModel(
                    [("open_key", ASCENDING)],
                    unique=True,
                    name="open_unique",
                    partialFilterExpression={"status": "open"},
                ),
            ]
        )

    async def atomically(self, work: Callable[[AsyncClientSession | None], Awaitable[T]]) -> T:
        """Run ``work`` (writes that must happen together: a change and its audit entry) in a transaction,
        retried on a transient conflict; ``work`` passes the session it gets as ``session=`` to each write.
        Without transactions on the server (a standalone mongod) the session is ``None`` and the writes go
        one after the other, the change first."""
        if not self.transactions:
            return await work(None)
        async with self.client.start_session() as session:
            return await session.with_transaction(work)

    # -- numbers --------------------------------------------------------------

    async def ensure_counter(self, year: int) -> None:
        """The year's counter exists (created before use: see DESIGN); once per process and year."""
        if year in self._counted_years:
            return
        try:
            await self.counters.insert_one({"_id": f"requests:{year}", "seq": 0})
        except DuplicateKeyError:
            pass
        self._counted_years.add(year)

    async def reserve_numbers(
        self, year: int, sources: Sequence[str], maybe_reserved: Collection[str] | None = None
    ) -> list[int]:
        """A sequence number of ``year`` for each source message, consecutive and never reused.

        The counter moves and each number is written down against its message in one transaction: a router
        that dies before registering leaves its numbers reserved, and the redelivered message takes the same
        number again — the year's numbers have no gaps. (A standalone mongod has no transactions: there a
        crash between the two writes can still skip numbers.) Only ``maybe_reserved`` sources (all, when
        None) are looked up first: a message delivered for the first time has reserved nothing."""
        if not sources:
            return []
        wanted = list(dict.fromkeys(sources))
        recheck = wanted if maybe_reserved is None else [s for s in wanted if s in maybe_reserved]
        await self.ensure_counter(year)

        async def reserve(session: AsyncClientSession | None) -> dict[str, int]:
            found: dict[str, int] = {}
            if recheck:
                cursor = self.reservations.find({"year": year, "source": {"$in": recheck}}, session=session)
                found = {doc["source"]: int(doc["seq"]) async for doc in cursor}
            missing = [source for source in wanted if source not in found]
            if missing:
                doc = await self.counters.find_one_and_update(
                    {"_id": f"requests:{year}"},
                    {"$inc": {"seq": len(missing)}},
                    return_document=ReturnDocument.AFTER,
                    session=session,
                )
                if doc is None:
                    raise TransientError(f"counter requests:{year} is unavailable")
                last = int(doc["seq"])
                seqs = range(last - len(missing) + 1, last + 1)
                now = datetime.now(UTC)
                await self.reservations.insert_many(
                    [
                        {"_id": f"{year}:{seq}", "year": year, "seq": seq, "source": source, "at": now}
                        for source, seq in zip(missing, seqs, strict=True)
                    ],
                    session=session,
                )
                found.update(zip(missing, seqs, strict=True))
            return found

        reserved = await self.atomically(reserve)
        return [reserved[source] for source in sources]

    # -- reads for the router -------------------------------------------------

    async def processed(self, inbound_ids: Sequence[str]) -> dict[str, MessageDoc]:
        """The stored messages among ``inbound_ids``: a message stored is a message processed."""
        if not inbound_ids:
            return {}
        cursor = self.messages.find({"_id": {"$in": list(inbound_ids)}}, {"raw": 0})
        return {doc["_id"]: doc async for doc in cursor}

    async def replies_to(self, inbounds: Sequence[MessageDoc]) -> list[MessageDoc]:
        """The hub's replies to stored messages. A reply is filed in its message's conversation, so the
        conversations narrow the read through the thread index; ``in_reply_to`` alone has no index and read
        every message of the journal (a second at 50,000 messages, on each redelivered round)."""
        if not inbounds:
            return []
        conversations = sorted({str(m.get("conversation_id")) for m in inbounds})
        query = {
            "conversation_id": {"$in": conversations},
            "in_reply_to": {"$in": [m["_id"] for m in inbounds]},
            "direction": "out",
        }
        return [doc async for doc in self.messages.find(query)]

    async def requests_by_source(self, inbound_ids: Sequence[str]) -> dict[str, RequestDoc]:
        if not inbound_ids:
            return {}
        cursor = self.requests.find({"source_message_id": {"$in": list(inbound_ids)}})
        return {doc["source_message_id"]: doc async for doc in cursor}

    async def requests_by_number(
        self, numbers: Iterable[str | None], projection: dict[str, Any] | None = None
    ) -> dict[str, RequestDoc]:
        found: dict[str, RequestDoc] = {}
        for chunk in chunks(sorted({n for n in numbers if n})):
            found.update({doc["_id"]: doc async for doc in self.requests.find({"_id": {"$in": chunk}}, projection)})
        return found

    async def request(self, number: str) -> RequestDoc | None:
        return await self.requests.find_one({"_id": number})

    async def numbers_by_external_refs(self, refs: Iterable[str]) -> dict[str, str]:
        """Request numbers of the messages a mail thread refers to (its References)."""
        wanted = sorted({r for r in refs if r})
        if not wanted:
            return {}
        cursor = self.messages.find(
            {"external_ref": {"$in": wanted}, "request_number": {"$ne": None}}, {"external_ref": 1, "request_number": 1}
        )
        return {str(doc["external_ref"]): str(doc["request_number"]) async for doc in cursor}

    async def conversations_by_id(self, keys: Iterable[str]) -> dict[str, ConversationDoc]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        return {doc["_id"]: doc async for doc in self.conversations.find({"_id": {"$in": wanted}})}

    async def contacts_by_identity(self, keys: Iterable[str]) -> list[ContactDoc]:
        wanted = sorted(set(keys))
        if not wanted:
            return []
        return [doc async for doc in self.contacts.find({"identities": {"$in": wanted}})]

    async def merge_contacts(self, keep: str, merged: Sequence[str], identities: Sequence[str]) -> None:
        """One person turned out to be several contacts (a phone shared in Telegram and a voicemail)."""
        now = datetime.now(UTC)
        others = [doc async for doc in self.contacts.find({"_id": {"$in": list(merged)}})]
        phones = sorted({p for doc in others for p in doc.get("phones", [])})
        emails = sorted({e for doc in others for e in doc.get("emails", [])})
        all_ids = sorted({*identities, *(i for doc in others for i in doc.get("identities", []))})
        await self.contacts.delete_many({"_id": {"$in": list(merged)}})
        await self.contacts.update_one(
            {"_id": keep},
            {
                "$addToSet": {
                    "identities": {"$each": all_ids},
                    "phones": {"$each": phones},
                    "emails": {"$each": emails},
                    "merged_from": {"$each": list(merged)},
                },
                "$set": {"updated_at": now},
            },
        )
        for collection in (self.conversations, self.messages, self.tasks):
            await collection.update_many({"contact_id": {"$in": list(merged)}}, {"$set": {"contact_id": keep}})
        await self.requests.update_many(
            {"contact_id": {"$in": list(merged)}}, {"$set": {"contact_id": keep, "updated_at": now}}
        )

    async def add_identities(
        self, contact_id: str, identities: Sequence[str], phones: Sequence[str], emails: Sequence[str], name: str | None
    ) -> None:
        update: dict[str, Any] = {"$set": {"updated_at": datetime.now(UTC)}}
        add = {
            k: {"$each": list(v)} for k, v in (("identities", identities), ("phones", phones), ("emails", emails)) if v
        }
        if add:
            update["$addToSet"] = add
        if name:
            update["$set"]["name"] = name
        await self.contacts.update_one({"_id": contact_id}, update)

    async def open_incidents(self, keys: Sequence[str]) -> dict[str, IncidentDoc]:
        if not keys:
            return {}
        cursor = self.incidents.find({"open_key": {"$in": sorted(set(keys))}, "status": "open"})
        return {doc["open_key"]: doc async for doc in cursor}

    async def incident_reporters(self, incident_id: str) -> list[RequestDoc]:
        """The requests of one incident's reporters, the first report first."""
        cursor = self.requests.find(
            {"incident_id": incident_id},
            {"address": 1, "registered_at": 1, "contact_id": 1, "conversation_id": 1, "status": 1, "channel": 1},
        ).sort("registered_at", ASCENDING)
        return [doc async for doc in cursor]

    async def labeled_corrections(self, limit: int = 100_000) -> list[dict[str, Any]]:
        """The dispatchers' corrections of categories as labeled rows (``text``, ``category``, ``emergency``)
        for training the classifier: the latest correction of each request, the newest first."""
        pipeline: list[dict[str, Any]] = [
            {"$match": {"text": {"$type": "string"}}},
            {"$sort": {"at": -1}},
            {
                "$group": {
                    "_id": "$request",
                    "text": {"$first": "$text"},
                    "category": {"$first": "$category"},
                    "emergency": {"$first": "$emergency"},
                    "at": {"$first": "$at"},
                }
            },
            {"$sort": {"at": -1}},
            {"$limit": limit},
        ]
        cursor = await self.corrections.aggregate(pipeline)
        return [
            {"text": doc["text"], "category": doc["category"], "emergency": bool(doc.get("emergency"))}
            async for doc in cursor
            if (doc.get("text") or "").strip()
        ]

    async def buildings_directory(self) -> list[BuildingDoc]:
        return [
            doc
            async for doc in self.buildings.find(
                {},
                {"key": 1, "street": 1, "street_type": 1, "house": 1, "building": 1, "structure": 1, "street_key": 1},
            )
        ]

    async def save_buildings(self, docs: Sequence[dict[str, Any]]) -> int:
        """Add or update directory buildings by their address key; nothing is deleted."""
        now = datetime.now(UTC)
        ops = [
            UpdateOne(
                {"key": d["key"]},
                {"$set": {**d, "updated_at": now}, "$setOnInsert": {"_id": d["key"], "created_at": now}},
                upsert=True,
            )
            for d in docs
        ]
        if ops:
            await self.buildings.bulk_write(ops, ordered=False)
        return len(ops)

    # -- the router's writes ------------------------------------------------------

    async def commit(self, plan: Plan) -> None:
        """Apply one batch in order: the residents and conversations a request refers to, then the requests
        (the unique source index is the dedup point), the incidents they open, the updates and audit entries,
        and the messages last (they mark the batch processed), so a crash anywhere leaves a prefix that the
        redelivery completes (``router.numbering``). One write at a time:
        concurrent writes measured slower on the embedded server (330 vs 290 msg/s in ``make bench``)."""
        await self._new_contacts(plan.new_contacts)
        await self._conversations(plan.conversations)
        await self._registrations(plan.registrations)
        await self._incidents(plan)
        for collection, updates in (
            (self.requests, [_request_change(c) for c in plan.request_changes]),
            (self.conversations, [_conversation_change(c) for c in plan.conversations if c.new is None]),
            (
                self.contacts,
                [UpdateOne({"_id": c.contact_id}, {"$set": {"address": c.address}}) for c in plan.contact_changes],
            ),
            (self.messages, [_message_change(c) for c in plan.message_changes]),
        ):
            if updates:
                await collection.bulk_write(updates, ordered=False)
        await self._insert_ignoring_duplicates(self.audit, plan.audits)
        await self._insert_ignoring_duplicates(self.tasks, plan.tasks)
        await self._insert_ignoring_duplicates(self.messages, plan.messages)

    async def _registrations(self, requests: list[RequestDoc]) -> None:
        if requests:
            failed = await self._insert_ignoring_duplicates(self.requests, requests)
            if failed:
                ids = [requests[i]["source_message_id"] for i in sorted(failed)]
                raise RegistrationConflict(f"source messages registered concurrently: {ids}")

    async def _new_contacts(self, contacts: list[ContactDoc]) -> None:
        if contacts:
            unique = list({doc["_id"]: doc for doc in contacts}.values())
            if await self._insert_ignoring_duplicates(self.contacts, unique):
                raise RegistrationConflict("a new resident's identity was registered concurrently")

    async def _conversations(self, changes: list[ConversationChange]) -> None:
        """New conversations are inserted whole; one that appeared meanwhile gets the change instead."""
        new = [c for c in changes if c.new is not None]
        if new:
            docs = [c.new for c in new if c.new is not None]
            taken = await self._insert_ignoring_duplicates(self.conversations, docs)
            if taken:
                await self.conversations.bulk_write([_conversation_change(new[i]) for i in sorted(taken)])

    async def _incidents(self, plan: Plan) -> None:
        if plan.expired_incidents:
            await self.incidents.bulk_write(
                [UpdateOne({"_id": i}, {"$set": {"status": "expired"}}) for i in plan.expired_incidents], ordered=True
            )
        opened = plan.opened_incidents
        failed = await self._insert_ignoring_duplicates(self.incidents, opened)
        if failed:
            ids = [opened[i]["_id"] for i in sorted(failed)]
            present = {doc["_id"] async for doc in self.incidents.find({"_id": {"$in": ids}}, {"_id": 1})}
            if set(ids) - present:
                raise RegistrationConflict(f"an incident was opened concurrently: {sorted(set(ids) - present)}")

    async def _insert_ignoring_duplicates(self, collection: Any, docs: Sequence[Any]) -> set[int]:
        """Insert, treating an existing _id or unique key as already written; returns those positions."""
        if not docs:
            return set()
        try:
            await collection.insert_many(list(docs), ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return {int(e["index"]) for e in errors}
        return set()

    async def record_audit(self, entry: AuditDoc, session: AsyncClientSession | None = None) -> None:
        try:
            await self.audit.insert_one(entry, session=session)
        except DuplicateKeyError:
            pass

    # -- delivery -------------------------------------------------------------

    async def delivered_ids(self, outbound_ids: Sequence[str]) -> set[str]:
        if not outbound_ids:
            return set()
        cursor = self.deliveries.find({"_id": {"$in": list(outbound_ids)}, "status": "sent"}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}

    async def record_deliveries(
        self, outbounds: Sequence[Outbound], status: str, at: datetime, error: str | None = None
    ) -> None:
        """Append what happened to replies: one insert per batch, no update on the hot path.

        A delivered reply that carries a request number is what informs the resident; the request's
        inform clock reads it from here (``inform_times``) until the clock watcher writes it into the request.
        """
        docs: list[DeliveryDoc] = [
            {
                "_id": o.id,
                "status": status,
                "at": at,
                "error": error,
                "channel": o.channel,
                "request_number": o.request_number,
            }
            for o in outbounds
        ]
        await self._insert_ignoring_duplicates(self.deliveries, docs)

    async def record_report(self, report: DeliveryReportDoc) -> None:
        """What a gateway said about one sent message (its id there, parts, cost, the handset's status)."""
        fields = {k: v for k, v in report.items() if k != "_id"}
        await self.delivery_reports.update_one({"_id": report["_id"]}, {"$set": fields}, upsert=True)

    async def pending_reports(self, channel: str, since: datetime, limit: int = 100) -> list[DeliveryReportDoc]:
        """Messages sent on ``channel`` since ``since`` whose final status the gateway has not told yet."""
        cursor = self.delivery_reports.find(
            {"channel": channel, "final": False, "sent_at": {"$gte": since}}, limit=limit
        )
        return [doc async for doc in cursor]

    async def reports(self, outbound_ids: Sequence[str]) -> dict[str, DeliveryReportDoc]:
        if not outbound_ids:
            return {}
        cursor = self.delivery_reports.find({"_id": {"$in": list(outbound_ids)}})
        return {doc["_id"]: doc async for doc in cursor}

    async def active_staff(self) -> list[StaffDoc]:
        return [doc async for doc in self.staff.find({"active": {"$ne": False}})]

    async def staff_links(self) -> set[str]:
        """The conversations (``telegram:<chat id>``) executors linked to the bot: their messages are not residents'."""
        cursor = self.staff.find({"active": {"$ne": False}}, {"links": 1})
        return {str(link) async for doc in cursor for link in doc.get("links") or []}

    async def take_quota(self, key: str, amount: int, limit: int) -> bool:
        """Count ``amount`` against ``key``'s ``limit`` (SMS parts a day) unless it would pass it; shared by
        every process, so two delivery workers cannot both take the last parts."""
        with contextlib.suppress(DuplicateKeyError):
            await self.quotas.update_one({"_id": key}, {"$setOnInsert": {"used": 0}}, upsert=True)
        taken = await self.quotas.find_one_and_update(
            {"_id": key, "used": {"$lte": limit - amount}}, {"$inc": {"used": amount}}
        )
        return taken is not None

    async def quota_used(self, key: str) -> int:
        doc = await self.quotas.find_one({"_id": key})
        return int((doc or {}).get("used") or 0)

    async def delivery_states(self, outbound_ids: Sequence[str]) -> dict[str, DeliveryDoc]:
        if not outbound_ids:
            return {}
        return {doc["_id"]: doc async for doc in self.deliveries.find({"_id": {"$in": list(outbound_ids)}})}

    async def inform_times(self, numbers: Iterable[str]) -> dict[str, datetime]:
        """When each request's resident first got a reply about it."""
        wanted = sorted({n for n in numbers if n})
        if not wanted:
            return {}
        found: dict[str, datetime] = {}
        for chunk in chunks(wanted):
            cursor = self.deliveries.find(
                {"request_number": {"$in": chunk}, "status": "sent"}, {"request_number": 1, "at": 1}
            )
            async for doc in cursor:
                number = str(doc["request_number"])
                if number not in found or doc["at"] < found[number]:
                    found[number] = doc["at"]
        return found

    async def in_time_slices(
        self,
        collection: AsyncCollection[Any],
        field: str,
        query: dict[str, Any],
        limit: int,
        *,
        start: datetime | None = None,
        ascending: bool = False,
        projection: dict[str, Any] | None = None,
        residual: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Up to ``limit`` documents of ``query`` ordered by the time ``field`` and then ``_id``: newest first
        (older than ``start`` if given), or with ``ascending`` oldest first after ``start``.

        Read slice by widening slice of time (``TIME_SLICES``), the last one open. On MongoDB a sorted,
        limited find is one index range scan either way; the embedded server reads every document an index
        range yields before it limits, so a page of the newest must not ask for all of them. A period in
        ``query[field]`` (``$gte``/``$lte``) bounds the slices. ``residual`` equalities are checked here on what
        the database returns (each slice is then read whole)."""
        period = dict(query.get(field) or {})
        low, high = period.pop("$gte", None), period.pop("$lte", None)
        rest = {k: v for k, v in query.items() if k != field}
        anchor = start or datetime.now(UTC)
        direction = ASCENDING if ascending else DESCENDING
        found: list[Any] = []
        edge = start
        for width in (*TIME_SLICES, None):
            bounds: dict[str, Any] = dict(period)
            if low is not None:
                bounds["$gte"] = low
            if high is not None:
                bounds["$lte"] = high
            if ascending:
                if edge is not None:
                    bounds["$gt"] = edge
                far = anchor + width if width is not None else None
                last = far is None or far > datetime.now(UTC) or (high is not None and far > high)
                if not last:
                    bounds["$lte"] = far
            else:
                if edge is not None:
                    bounds["$lt"] = edge
                far = anchor - width if width is not None else None
                last = far is None or (low is not None and far <= low)
                if not last:
                    bounds["$gte"] = far
            if residual:
                found.extend(await self._residual_slice(collection, field, bounds, rest, residual, direction))
                found = found[:limit]
            else:
                cursor = collection.find({field: bounds, **rest}, projection)
                cursor = cursor.sort([(field, direction), ("_id", direction)])
                found.extend([doc async for doc in cursor.limit(limit - len(found))])
            if len(found) >= limit or last:
                break
            edge = far
        return await self._whole(collection, found, projection) if residual else found

    @staticmethod
    async def _residual_slice(
        collection: AsyncCollection[Any],
        field: str,
        bounds: dict[str, Any],
        rest: dict[str, Any],
        residual: Mapping[str, Any],
        direction: int,
    ) -> list[Any]:
        """The keys of a slice's documents that pass ``residual``: a slice is read whole, so only the fields
        that decide travel; the documents kept are read afterwards (``_whole``)."""
        keys = {field: 1, **dict.fromkeys(residual, 1)}
        cursor = collection.find({field: bounds, **rest}, keys).sort([(field, direction), ("_id", direction)])
        return [d async for d in cursor if all(d.get(k) == v for k, v in residual.items())]

    @staticmethod
    async def _whole(collection: AsyncCollection[Any], keys: list[Any], projection: dict[str, Any] | None) -> list[Any]:
        ids = [k["_id"] for k in keys]
        docs: dict[Any, Any] = {}
        for chunk in chunks(ids):
            docs.update({d["_id"]: d async for d in collection.find({"_id": {"$in": chunk}}, projection)})
        return [docs[i] for i in ids if i in docs]

    async def with_inform(self, requests: list[RequestDoc]) -> list[RequestDoc]:
        """Requests with their inform clock completed from the delivery records (for reading, not writing)."""
        open_numbers = [
            r["_id"]
            for r in requests
            if ((r.get("clocks") or {}).get("inform") or {}).get("done_at") is None
            and (r.get("clocks") or {}).get("inform")
        ]
        times = await self.inform_times(open_numbers)
        for request in requests:
            at = times.get(request["_id"])
            if at is not None:
                clock = request["clocks"]["inform"]
                clock["done_at"], clock["met"], clock["by"] = at, at <= clock["due_at"], "hub"
        return requests

    # -- the clock watcher ------------------------------------------------------

    async def requests_due(self, horizon: datetime, limit: int = 500) -> list[RequestDoc]:
        """Requests whose next clock event (a warning, a breach) comes before ``horizon``. Bounded below: the
        embedded server's index range up to ``horizon`` starts at the closed requests' nulls, and read all of
        them on every tick of the watcher (9 s at 100,000 requests)."""
        cursor = self.requests.find(
            {"next_due_at": {"$gte": EPOCH, "$lte": horizon}}, {"clocks": 1, "conversation_id": 1}
        ).limit(limit)
        return [doc async for doc in cursor]

    async def record_clock_alerts(self, records: Sequence[ClockRecord]) -> None:
        """Write the watcher's warnings and breaches, and the deliveries that informed residents, of one tick
        in one write: at a district's outage a tick concerns hundreds of requests.

        Only the alert fields are written, so a clock a dispatcher completes meanwhile keeps its record."""
        if records:
            await self.requests.bulk_write([_clock_record(r) for r in records], ordered=False)

    async def tasks_due(self, horizon: datetime) -> list[TaskDoc]:
        cursor = self.tasks.find({"status": "open", "due_at": {"$lte": horizon}, "alerted": {"$ne": "breach"}})
        return [doc async for doc in cursor]

    async def mark_task_alerted(self, task_id: str, kind: str) -> None:
        fields: dict[str, Any] = {"alerted": kind}
        if kind == "breach":
            fields["met"] = False
        await self.tasks.update_one({"_id": task_id}, {"$set": fields})

    # -- files (photos, voice messages, attachments) --------------------------

    async def store_file(
        self, data: bytes, filename: str, content_type: str | None, metadata: dict[str, Any] | None = None
    ) -> str:
        """Keep the bytes of an attachment with the message; returns ``gridfs:<id>``."""
        bucket = AsyncGridFSBucket(self.db, bucket_name="files")
        meta = {"content_type": content_type or "application/octet-stream", **(metadata or {})}
        file_id = await bucket.upload_from_stream(filename or "file", data, metadata=meta)
        return f"gridfs:{file_id}"

    async def read_file(self, reference: str) -> tuple[bytes, str, str] | None:
        """The bytes, content type and name of a stored file, or None."""
        if not reference.startswith("gridfs:"):
            return None
        try:
            file_id = ObjectId(reference.removeprefix("gridfs:"))
        except InvalidId:
            return None
        bucket = AsyncGridFSBucket(self.db, bucket_name="files")
        try:
            stream = await bucket.open_download_stream(file_id)
        except NoFile:
            return None
        data = await stream.read()
        meta = stream.metadata or {}
        return data, str(meta.get("content_type") or "application/octet-stream"), stream.filename or "file"

    # -- channel cursors (IMAP UIDs, long poll positions) ---------------------

    async def get_cursor(self, name: str) -> dict[str, Any]:
        return await self.cursors.find_one({"_id": name}) or {}

    async def set_cursor(self, name: str, values: dict[str, Any]) -> None:
        await self.cursors.update_one({"_id": name}, {"$set": {**values, "updated_at": datetime.now(UTC)}}, upsert=True)

    # -- web chat history -----------------------------------------------------

    async def anyone_present(self, since: datetime) -> bool:
        """Whether a dispatcher's inbox listened for events since ``since``."""
        return await self.presence.find_one({"at": {"$gte": since}}) is not None

    async def reply_files(self, message_id: str, channel: str) -> list[dict[str, Any]]:
        """The files attached to one reply sent on ``channel``."""
        doc = await self.messages.find_one(
            {"_id": message_id, "direction": "out", "channel": channel}, {"outbound.files": 1}
        )
        outbound: dict[str, Any] = dict(doc.get("outbound") or {}) if doc is not None else {}
        return list(outbound.get("files") or [])

    async def history(self, conversation_id: str, limit: int = 100, timeout: float | None = None) -> list[MessageDoc]:
        """The last messages of a conversation, oldest first; a point lookup settles a new conversation.

        ``timeout`` bounds the whole read: history is a convenience, never worth a stalled socket."""
        with pymongo.timeout(timeout):
            if await self.conversations.find_one({"_id": conversation_id}, {"_id": 1}) is None:
                return []
            cursor = (
                self.messages.find({"conversation_id": conversation_id}, {"raw": 0}).sort("at", DESCENDING).limit(limit)
            )
            docs = [doc async for doc in cursor]
        docs.reverse()
        return docs

    # -- dead letters ---------------------------------------------------------

    async def record_dead_letter(
        self, message_id: str | None, reason: str, source: str, body: bytes, headers: dict[str, Any]
    ) -> None:
        text = body[:20_000].decode("utf-8", errors="replace")
        await self.dead_letters.update_one(
            {"_id": f"{source}:{message_id or uuid.uuid4().hex}"},
            {
                "$setOnInsert": {
                    "message_id": message_id,
                    "reason": reason,
                    "source": source,
                    "body": text,
                    "headers": {k: str(v) for k, v in headers.items()},
                    "at": datetime.now(UTC),
                    "resolved": False,
                }
            },
            upsert=True,
        )

    async def recent_dead_letters(self, limit: int = 200) -> list[DeadLetterDoc]:
        return [d async for d in self.dead_letters.find({}).sort("at", -1).limit(limit)]

    # -- export ---------------------------------------------------------------


# -- plan operations as MongoDB updates ---------------------------------------------


APPLIED_KEPT = 100
"""How many recent message ids a document remembers as applied: more than the messages one router can
hold unacknowledged of one conversation (``ADSHUB_PREFETCH``, 64 by default), which are all a crash
sends back."""


def _applied(message_id: str) -> dict[str, Any]:
    return {"applied_messages": {"$each": [message_id], "$slice": -APPLIED_KEPT}}


@dataclass(frozen=True)
class ClockRecord:
    """What the clock watcher saw of one request: the alerts it raised and when to look again."""

    number: str
    alerts: Sequence[Alert]
    at: datetime
    next_due_at: datetime | None
    informed: ClockDoc | None = None


def _clock_record(record: ClockRecord) -> UpdateOne:
    fields: dict[str, Any] = {"next_due_at": record.next_due_at}
    if record.informed is not None:
        fields["clocks.inform"] = record.informed
    if record.informed is not None and record.informed.get("met") is False:
        fields["breached"] = True
    for alert in record.alerts:
        if alert.kind == "breach":
            fields[f"clocks.{alert.clock}.breached_at"] = record.at
            fields[f"clocks.{alert.clock}.met"] = False
            fields["breached"] = True
        else:
            fields[f"clocks.{alert.clock}.warned_at"] = record.at
    return UpdateOne({"_id": record.number}, {"$set": fields})


def _conversation_change(change: ConversationChange) -> UpdateOne:
    """A counted change applies once per message: an attempt that died after it leaves the id behind."""
    update: dict[str, Any] = {"$set": dict(change.fields)}
    query: dict[str, Any] = {"_id": change.conversation_id}
    if change.counted:
        update["$inc"] = {"unread": change.unread, "messages": change.messages}
        if change.message_id:
            query["applied_messages"] = {"$ne": change.message_id}
            update["$push"] = _applied(change.message_id)
    return UpdateOne(query, update)


def _request_change(change: RequestChange) -> UpdateOne:
    if isinstance(change, Attach):
        update: dict[str, Any] = {
            "$set": {"updated_at": change.at},
            "$inc": {"follow_ups": 1},
            "$push": _applied(change.message_id),
        }
        if change.address is not None:
            update["$set"]["address"] = change.address
        if change.attachments:
            update["$push"]["attachments"] = {"$each": list(change.attachments)}
        return UpdateOne({"_id": change.number, "applied_messages": {"$ne": change.message_id}}, update)
    if isinstance(change, Rate):
        fields: dict[str, Any] = {"updated_at": change.at}
        if change.rating is not None:
            fields.update({"survey.rating": change.rating, "survey.rated_at": change.at})
        if change.comment is not None:
            fields["survey.comment"] = change.comment
        return UpdateOne({"_id": change.number, "contact_id": change.contact_id}, {"$set": fields})
    if isinstance(change, ReviseText):
        return UpdateOne(
            {"_id": change.number},
            {
                "$set": {"text": change.text, "updated_at": change.at, **change.reclassified},
                "$push": {
                    "text_history": {
                        "at": change.received_at,
                        "text": change.previous,
                        "message_id": change.message_id,
                    }
                },
            },
        )
    if isinstance(change, JoinIncident):
        return UpdateOne({"_id": change.number}, {"$set": {"incident_id": change.incident_id}})
    raise TypeError(f"not a request change: {change!r}")


def _message_change(change: MessageChange) -> UpdateOne:
    if isinstance(change, LinkMessages):
        fields: dict[str, Any] = {"request_number": change.number}
        if change.text is not None:
            fields["text"] = change.text
        ids = list(change.message_ids)
        return UpdateOne({"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": ids}}, {"$set": fields})
    if isinstance(change, EditMessage):
        return UpdateOne(
            {"_id": change.message_id},
            {
                "$set": {"text": change.text},
                "$push": {"edits": {"at": change.at, "previous": change.previous, "edit_id": change.edit_id}},
            },
        )
    raise TypeError(f"not a message change: {change!r}")
