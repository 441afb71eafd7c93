"""The journal: the one owner of MongoDB (PyMongo's async API).

Collections: contacts, conversations, messages (both directions), requests,
counters, audit, dead_letters, tasks (callbacks), users, buildings, staff,
corrections, cursors. Writes that the router makes for many messages at once
go through ``commit`` in a handful of round trips. Everything written is
idempotent under redelivery: deterministic ids, a unique index on the source
message of a request, duplicates ignored.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from gridfs import AsyncGridFSBucket, NoFile
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument, UpdateOne
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

from adshub.errors import TransientError

log = logging.getLogger("adshub.journal")

DUPLICATE_KEY = 11000
TRANSIENT_ERRORS = (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError, WriteConcernError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (*TRANSIENT_ERRORS, TransientError)):
        return True
    if isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError"):
        return True
    return False


@dataclass
class Commit:
    """Everything one batch of inbound messages writes, applied in dependency order."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    request_updates: list[UpdateOne] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)
    conversations: list[UpdateOne] = field(default_factory=list)
    contacts: list[UpdateOne] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    message_updates: list[UpdateOne] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    incident_updates: list[UpdateOne] = field(default_factory=list)
    new_contacts: list[dict[str, Any]] = field(default_factory=list)
    new_conversations: list[tuple[dict[str, Any], UpdateOne]] = field(default_factory=list)
    """New conversations with their state applied; the update is the fallback when one appeared meanwhile."""


class RegistrationConflict(TransientError):
    """Another router registered the same source message at the same moment; retry the batch."""


class Journal:
    """The repository of requests and conversations."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.client = client
        self.db: AsyncDatabase[dict[str, Any]] = client[database]
        self.contacts = self.db["contacts"]
        self.conversations = self.db["conversations"]
        self.messages = self.db["messages"]
        self.requests = self.db["requests"]
        self.counters = self.db["counters"]
        self.audit = self.db["audit"]
        self.dead_letters = self.db["dead_letters"]
        self.tasks = self.db["tasks"]
        self.users = self.db["users"]
        self.buildings = self.db["buildings"]
        self.staff = self.db["staff"]
        self.corrections = self.db["corrections"]
        self.cursors = self.db["cursors"]
        self.incidents = self.db["incidents"]
        self.deliveries = self.db["deliveries"]

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
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=30_000,
            appname="adshub",
            **options,
        )
        return cls(client, database)

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> None:
        await self.db.command("ping")

    async def prepare(self, years: Iterable[int] = ()) -> None:
        """Indexes and counters, created at start (counters before use: see DESIGN).

        A person is found by phone through ``identities`` (``phone:+7…``), so contacts need no phone index;
        every index costs each write on the hot path."""
        await self.contacts.create_indexes(
            [IndexModel([("identities", ASCENDING)], unique=True, name="identities_unique")]
        )
        await self.conversations.create_indexes(
            [
                IndexModel([("last_message_at", DESCENDING)], name="recent"),
                IndexModel([("contact_id", ASCENDING)], name="contact"),
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
            ]
        )
        await self.deliveries.create_indexes([IndexModel([("request_number", ASCENDING)], name="request", sparse=True)])
        await self.audit.create_indexes([IndexModel([("request", ASCENDING), ("at", ASCENDING)], name="request")])
        await self.dead_letters.create_indexes([IndexModel([("at", DESCENDING)], name="recent")])
        await self.tasks.create_indexes(
            [
                IndexModel([("status", ASCENDING), ("due_at", ASCENDING)], name="due"),
            ]
        )
        await self.users.create_indexes([IndexModel([("login", ASCENDING)], unique=True, name="login_unique")])
        await self.buildings.create_indexes([IndexModel([("key", ASCENDING)], unique=True, name="key_unique")])
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
        for year in {*years, datetime.now(UTC).year, datetime.now(UTC).year + 1}:
            await self.ensure_counter(year)

    # -- numbers --------------------------------------------------------------

    async def ensure_counter(self, year: int) -> None:
        try:
            await self.counters.insert_one({"_id": f"requests:{year}", "seq": 0})
        except DuplicateKeyError:
            pass

    async def reserve_numbers(self, year: int, count: int) -> list[int]:
        """``count`` consecutive sequence numbers of ``year``, atomically; never reused."""
        if count == 0:
            return []
        for _ in range(3):
            doc = await self.counters.find_one_and_update(
                {"_id": f"requests:{year}"}, {"$inc": {"seq": count}}, return_document=ReturnDocument.AFTER
            )
            if doc is not None:
                last = int(doc["seq"])
                return list(range(last - count + 1, last + 1))
            await self.ensure_counter(year)
        raise TransientError(f"counter requests:{year} is unavailable")

    # -- reads for the router -------------------------------------------------

    async def processed(self, inbound_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not inbound_ids:
            return {}
        cursor = self.messages.find({"_id": {"$in": list(inbound_ids)}}, {"raw": 0})
        return {doc["_id"]: doc async for doc in cursor}

    async def replies_to(self, inbound_ids: Sequence[str]) -> list[dict[str, Any]]:
        cursor = self.messages.find({"in_reply_to": {"$in": list(inbound_ids)}, "direction": "out"})
        return [doc async for doc in cursor]

    async def requests_by_source(self, inbound_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not inbound_ids:
            return {}
        cursor = self.requests.find({"source_message_id": {"$in": list(inbound_ids)}})
        return {doc["source_message_id"]: doc async for doc in cursor}

    async def requests_by_number(self, numbers: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted({n for n in numbers if n})
        if not wanted:
            return {}
        return {doc["_id"]: doc async for doc in self.requests.find({"_id": {"$in": wanted}})}

    async def request(self, number: str) -> dict[str, Any] | None:
        return await self.requests.find_one({"_id": number})

    async def numbers_by_external_refs(self, refs: Iterable[str]) -> dict[str, str]:
        wanted = sorted({r for r in refs if r})
        if not wanted:
            return {}
        cursor = self.messages.find(
            {"external_ref": {"$in": wanted}, "request_number": {"$ne": None}}, {"external_ref": 1, "request_number": 1}
        )
        return {doc["external_ref"]: doc["request_number"] async for doc in cursor}

    async def conversations_by_id(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        return {doc["_id"]: doc async for doc in self.conversations.find({"_id": {"$in": wanted}})}

    async def contacts_by_identity(self, keys: Iterable[str]) -> list[dict[str, Any]]:
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
        for collection in (self.conversations, self.requests, self.messages, self.tasks):
            await collection.update_many({"contact_id": {"$in": list(merged)}}, {"$set": {"contact_id": keep}})

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

    async def open_incidents(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        cursor = self.incidents.find({"open_key": {"$in": sorted(set(keys))}, "status": "open"})
        return {doc["open_key"]: doc async for doc in cursor}

    async def incident_reporters(self, incident_id: str) -> list[dict[str, Any]]:
        """The requests of one incident's reporters, the first report first."""
        cursor = self.requests.find(
            {"incident_id": incident_id},
            {"address": 1, "registered_at": 1, "contact_id": 1, "conversation_id": 1, "status": 1, "channel": 1},
        ).sort("registered_at", ASCENDING)
        return [doc async for doc in cursor]

    async def buildings_directory(self) -> list[dict[str, Any]]:
        return [
            doc
            async for doc in self.buildings.find(
                {},
                {"key": 1, "street": 1, "street_type": 1, "house": 1, "building": 1, "structure": 1, "street_key": 1},
            )
        ]

    # -- writes ---------------------------------------------------------------

    async def commit(self, commit: Commit) -> None:
        """Apply one batch in order: the residents and conversations a request refers to, then the requests
        (the unique source index is the dedup point), the incidents they open, the updates and audit entries,
        and the messages last (they mark the batch processed), so a crash anywhere leaves a prefix that the
        redelivery completes (``Router._number_and_link``). One write at a time:
        concurrent writes measured slower on the embedded server (330 vs 290 msg/s in ``make bench``)."""
        await self._new_contacts(commit)
        await self._new_conversations(commit)
        await self._new_requests(commit)
        await self._incidents(commit)
        for collection, updates in (
            (self.requests, commit.request_updates),
            (self.conversations, commit.conversations),
            (self.contacts, commit.contacts),
            (self.messages, commit.message_updates),
        ):
            if updates:
                await collection.bulk_write(updates, ordered=False)
        await self._insert_ignoring_duplicates(self.audit, commit.audits)
        await self._insert_ignoring_duplicates(self.tasks, commit.tasks)
        await self._insert_ignoring_duplicates(self.messages, commit.messages)

    async def _new_requests(self, commit: Commit) -> None:
        if commit.requests:
            failed = await self._insert_ignoring_duplicates(self.requests, commit.requests)
            if failed:
                ids = [commit.requests[i]["source_message_id"] for i in sorted(failed)]
                raise RegistrationConflict(f"source messages registered concurrently: {ids}")

    async def _new_contacts(self, commit: Commit) -> None:
        if commit.new_contacts:
            unique = list({doc["_id"]: doc for doc in commit.new_contacts}.values())
            if await self._insert_ignoring_duplicates(self.contacts, unique):
                raise RegistrationConflict("a new resident's identity was registered concurrently")

    async def _new_conversations(self, commit: Commit) -> None:
        if commit.new_conversations:
            docs = [doc for doc, _ in commit.new_conversations]
            taken = await self._insert_ignoring_duplicates(self.conversations, docs)
            if taken:
                await self.conversations.bulk_write([commit.new_conversations[i][1] for i in sorted(taken)])

    async def _incidents(self, commit: Commit) -> None:
        if commit.incident_updates:
            await self.incidents.bulk_write(commit.incident_updates, ordered=True)
        failed = await self._insert_ignoring_duplicates(self.incidents, commit.incidents)
        if failed:
            ids = [commit.incidents[i]["_id"] for i in sorted(failed)]
            present = {doc["_id"] async for doc in self.incidents.find({"_id": {"$in": ids}}, {"_id": 1})}
            if set(ids) - present:
                raise RegistrationConflict(f"an incident was opened concurrently: {sorted(set(ids) - present)}")

    async def _insert_ignoring_duplicates(self, collection: Any, docs: list[dict[str, Any]]) -> set[int]:
        """Insert, treating an existing _id or unique key as already written; returns those positions."""
        if not docs:
            return set()
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return {int(e["index"]) for e in errors}
        return set()

    async def record_audit(
        self, request: str, actor: str, action: str, changes: dict[str, Any], source: str, message_id: str | None = None
    ) -> None:
        await self.audit.insert_one(audit_entry(request, actor, action, changes, source, message_id))

    # -- delivery -------------------------------------------------------------

    async def delivered_ids(self, outbound_ids: Sequence[str]) -> set[str]:
        if not outbound_ids:
            return set()
        cursor = self.deliveries.find({"_id": {"$in": list(outbound_ids)}, "status": "sent"}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}

    async def record_deliveries(
        self, outbounds: Sequence[Any], status: str, at: datetime, error: str | None = None
    ) -> None:
        """Append what happened to replies: one insert per batch, no update on the hot path.

        A delivered reply that carries a request number is what informs the resident; the request's
        inform clock reads it from here (``inform_times``) until the clock watcher writes it into the request.
        """
        docs = [
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

    async def delivery_states(self, outbound_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not outbound_ids:
            return {}
        return {doc["_id"]: doc async for doc in self.deliveries.find({"_id": {"$in": list(outbound_ids)}})}

    async def inform_times(self, numbers: Iterable[str]) -> dict[str, datetime]:
        """When each request's resident first got a reply about it."""
        wanted = sorted({n for n in numbers if n})
        if not wanted:
            return {}
        found: dict[str, datetime] = {}
        async for doc in self.deliveries.find(
            {"request_number": {"$in": wanted}, "status": "sent"}, {"request_number": 1, "at": 1}
        ):
            number = doc["request_number"]
            if number not in found or doc["at"] < found[number]:
                found[number] = doc["at"]
        return found

    async def with_inform(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
                clock.update(done_at=at, met=at <= clock["due_at"], by="hub")
        return requests

    async def apply_inform(self, number: str, at: datetime) -> None:
        """Write a recorded informing into the request itself (done by the clock watcher)."""
        doc = await self.requests.find_one({"_id": number}, {"clocks": 1})
        clocks = (doc or {}).get("clocks") or {}
        clock = clocks.get("inform")
        if not clock or clock.get("done_at") is not None:
            return
        clock = {**clock, "done_at": at, "met": at <= clock["due_at"], "by": "hub"}
        await self.requests.update_one(
            {"_id": number, "clocks.inform.done_at": None},
            {"$set": {"clocks.inform": clock, "next_due_at": next_due({**clocks, "inform": clock})}},
        )

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

    async def history(self, conversation_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The last messages of a conversation, oldest first; a point lookup settles a new conversation."""
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

    # -- export ---------------------------------------------------------------

    async def requests_for_export(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if since or until:
            query["registered_at"] = {k: v for k, v in (("$gte", since), ("$lt", until)) if v}
        cursor = self.requests.find(query).sort("registered_at", ASCENDING)
        return await self.with_inform([doc async for doc in cursor])


def next_due(clocks: dict[str, Any] | None, warn_before: timedelta = timedelta(0)) -> datetime | None:
    """When the clock watcher must look at a request again (it looks ``warn_before`` ahead).

    A clock already warned about is next looked at when it runs out; a breached
    or met clock needs no more looks.
    """
    times = []
    for clock in (clocks or {}).values():
        if clock.get("done_at") is not None or clock.get("breached_at") is not None or not clock.get("due_at"):
            continue
        times.append(clock["due_at"] + (warn_before if clock.get("warned_at") else timedelta(0)))
    return min(times) if times else None


def audit_entry(
    request: str,
    actor: str,
    action: str,
    changes: dict[str, Any],
    source: str,
    message_id: str | None = None,
    at: datetime | None = None,
    entry_id: str | None = None,
) -> dict[str, Any]:
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
