"""What the dispatcher inbox reads and writes, as journal operations.

The inbox decides (which status may follow which, what the resident is told);
the desk stores. Every change to a request is written together with its audit
entry, by one method, so the inbox never forgets the trail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import pymongo
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError, PyMongoError

from adshub.errors import QueryTooBroad
from domain.address import building_key, extract_address, street_key
from domain.clocks import completed, next_due
from journal.documents import (
    OPEN_STATUSES,
    AuditDoc,
    BuildingDoc,
    CannedReplyDoc,
    ClockDoc,
    ContactDoc,
    ConversationDoc,
    CorrectionDoc,
    DeadLetterDoc,
    IncidentDoc,
    MessageDoc,
    PersonEventDoc,
    PresenceDoc,
    RequestDoc,
    StaffDoc,
    StaffNoteDoc,
    TaskDoc,
)
from journal.repository import EPOCH, Journal, chunks

FIRST_YEAR, LAST_YEAR = 2000, 2100
"""Dates a journal filter may name; others are ignored (year 1 would not survive the time zone)."""


@dataclass
class ConversationView:
    """One conversation as a dispatcher sees it: every channel of the person, their requests, the address."""

    conversation: ConversationDoc
    contact: ContactDoc | dict[str, Any]
    messages: list[MessageDoc]
    requests: list[RequestDoc]
    address_history: list[RequestDoc]
    tasks: list[TaskDoc]
    active: RequestDoc | None


@dataclass(frozen=True)
class JournalFilters:
    """The journal page's filters as a dispatcher typed them; unknown or malformed values are ignored."""

    values: Mapping[str, str] = field(default_factory=dict)

    def building(self) -> str | None:
        """The building the address filter names («Ленина 5»), or None for a street or no address."""
        address = self.values.get("address", "").strip()
        return building_key(extract_address(address)) if address else None

    def keeps(self, request: Mapping[str, Any]) -> bool:
        """What the query's key range cannot say: «Ленина 5» is house 5 and its blocks, not house 50."""
        building = self.building()
        if building is None:
            return True
        key = str((request.get("address") or {}).get("key") or "")
        return key == building or key.startswith(building + "|")

    def query(self, tz: ZoneInfo) -> dict[str, Any]:
        """Only indexed fields and key ranges: the embedded server has no text indexes. A building's range
        holds more than the building (``keeps`` tells)."""
        filters = self.values
        query: dict[str, Any] = {}
        period: dict[str, datetime] = {}
        for key, op in (("from", "$gte"), ("to", "$lte")):
            value = filters.get(key, "").strip()
            if value:
                try:
                    day = datetime.strptime(value, "%Y-%m-%d")
                except ValueError:
                    continue
                if not FIRST_YEAR <= day.year <= LAST_YEAR:
                    continue
                moment = day.replace(tzinfo=tz)
                if key == "to":
                    moment = moment.replace(hour=23, minute=59, second=59)
                period[op] = moment
        if period:
            query["registered_at"] = period
        for key in ("channel", "category", "status"):
            if filters.get(key):
                query[key] = filters[key]
        address = filters.get("address", "").strip()
        if address:
            building = self.building()
            key = building or street_key(address) + "|"
            query["address.key"] = {"$gte": key, "$lt": key + "\uffff"}
        if filters.get("breached"):
            query["breached"] = True
        return query


LISTED = {"text_history": 0, "applied_messages": 0, "replay": 0, "raw": 0}
"""What a list of requests never shows, left in the database."""
LISTED_CONVERSATION = {"applied_messages": 0, "replay": 0, "state": 0}
OPEN_LISTED = 5000
"""Open conversations the inbox reads at most: far above a city's worst night, below what would stall it."""
EXPORT_BATCH = 500
JOURNAL_PAGE_SECONDS = 10.0


@dataclass(frozen=True)
class JournalKey:
    """Where a journal page starts or ends: the registration time and number of a request on its edge.
    As a token in a link: milliseconds since the epoch and the number."""

    registered_at: datetime
    number: str

    @classmethod
    def of(cls, request: Mapping[str, Any]) -> JournalKey:
        return cls(request["registered_at"], str(request["_id"]))

    @classmethod
    def parse(cls, token: str) -> JournalKey | None:
        millis, _, number = token.partition("~")
        if not (millis.isdigit() and len(millis) <= 15 and 0 < len(number) <= 40 and number.isprintable()):
            return None
        return cls(datetime.fromtimestamp(int(millis) / 1000, UTC), number)

    @property
    def token(self) -> str:
        moment = self.registered_at if self.registered_at.tzinfo else self.registered_at.replace(tzinfo=UTC)
        return f"{round(moment.timestamp() * 1000)}~{self.number}"


@dataclass
class JournalPage:
    """A page of requests and the keys of the pages beside it (None: there is none that way)."""

    requests: list[RequestDoc]
    newer: JournalKey | None
    older: JournalKey | None


INDEXED_FIRST = ("breached", "category", "status", "channel")
"""The journal's equality filters in the order their ``(field, registered_at)`` indexes narrow a page."""


def _one_equality_indexed(query: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The query with one equality filter left for the database, and the other equalities to check on the
    documents it returns: the embedded server serves a range with one equality through a compound index,
    but two equalities and a range through none (it then reads every slice whole)."""
    equalities = [f for f in INDEXED_FIRST if f in query]
    residual = {f: query[f] for f in equalities[1:]}
    return {k: v for k, v in query.items() if k not in residual}, residual


def _within(moment: datetime, period: Mapping[str, datetime]) -> bool:
    low, high = period.get("$gte"), period.get("$lte")
    return (low is None or moment >= low) and (high is None or moment <= high)


class Desk:
    """The inbox's side of the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    # -- reading ------------------------------------------------------------------

    async def conversation(self, conversation_id: str) -> ConversationDoc | None:
        return await self.journal.conversations.find_one({"_id": conversation_id})

    async def conversation_view(self, conversation_id: str) -> ConversationView | None:
        j = self.journal
        conv = await j.conversations.find_one({"_id": conversation_id})
        if conv is None:
            return None
        contact_id = conv.get("contact_id")
        contact: ContactDoc | dict[str, Any] = await j.contacts.find_one({"_id": contact_id}) or {}
        siblings = [c["_id"] async for c in j.conversations.find({"contact_id": contact_id}, {"_id": 1})] or [
            conversation_id
        ]
        messages = [
            m
            async for m in j.messages.find({"conversation_id": {"$in": siblings}}, {"raw": 0}).sort("at", 1).limit(500)
        ]
        requests = [
            r async for r in j.requests.find({"contact_id": contact_id}).sort("registered_at", DESCENDING).limit(50)
        ]
        keys = {(r.get("address") or {}).get("key") for r in requests} - {None}
        neighbours: list[RequestDoc] = []
        if keys:
            neighbours = [
                r
                async for r in j.requests.find(
                    {"address.key": {"$in": sorted(k for k in keys if k)}, "contact_id": {"$ne": contact_id}}
                )
                .sort("registered_at", DESCENDING)
                .limit(50)
            ]
        tasks = [t async for t in j.tasks.find({"conversation_id": {"$in": siblings}}).sort("due_at", 1)]
        await j.with_inform(requests)
        sent = [m["_id"] for m in messages if m.get("direction") == "out"]
        states = await j.delivery_states(sent)
        reports = await j.reports(sent)
        for message in messages:
            state = states.get(message["_id"])
            if state is not None:
                message["delivery"] = {"status": state["status"], "error": state.get("error"), "sent_at": state["at"]}
            report = reports.get(message["_id"])
            if report is not None:
                message.setdefault("delivery", {})["report"] = report
        active = next((r for r in requests if r["_id"] == conv.get("active_request")), None)
        return ConversationView(conv, contact, messages, requests, neighbours, tasks, active)

    async def last_inbound(self, conversation_id: str) -> MessageDoc | None:
        return await self.journal.messages.find_one(
            {"conversation_id": conversation_id, "direction": "in"}, sort=[("at", DESCENDING)]
        )

    async def request_with_audit(self, number: str) -> tuple[RequestDoc, list[AuditDoc]] | None:
        doc = await self.journal.request(number)
        if doc is None:
            return None
        audit = [a async for a in self.journal.audit.find({"request": number}).sort("at", 1)]
        await self.journal.with_inform([doc])
        return doc, audit

    async def open_tasks(self, limit: int = 100) -> list[TaskDoc]:
        return [t async for t in self.journal.tasks.find({"status": "open"}).sort("due_at", 1).limit(limit)]

    async def task(self, task_id: str) -> TaskDoc | None:
        return await self.journal.tasks.find_one({"_id": task_id})

    async def incident(self, incident_id: str) -> IncidentDoc | None:
        return await self.journal.incidents.find_one({"_id": incident_id})

    async def building(self, key: str | None) -> BuildingDoc | None:
        return await self.journal.buildings.find_one({"key": key}) if key else None

    async def staff(self) -> list[StaffDoc]:
        return [s async for s in self.journal.staff.find({"active": {"$ne": False}}).sort("name", 1)]

    async def person(self, staff_id: str) -> StaffDoc | None:
        return await self.journal.staff.find_one({"_id": staff_id})

    async def dead_letters(self) -> list[DeadLetterDoc]:
        return await self.journal.recent_dead_letters()

    # -- the journal page, exports and reports -------------------------------------------

    async def journal_page(
        self, filters: JournalFilters, tz: ZoneInfo, at: JournalKey | None, size: int, newer: bool = False
    ) -> JournalPage:
        """One page of the journal, newest first, starting after ``at`` (or, with ``newer``, the page that
        ends before it). By key, not by skip: page 2,000 costs what page 1 does.

        Bounded in time (``JOURNAL_PAGE_SECONDS``, the database told too): a filter no index narrows, such
        as a street alone over a million requests on the embedded server, is refused with ``QueryTooBroad``
        rather than holding the page and the database for minutes."""
        try:
            with pymongo.timeout(JOURNAL_PAGE_SECONDS):
                return await self._journal_page(filters, tz, at, size, newer)
        except PyMongoError as exc:
            if exc.timeout:
                raise QueryTooBroad(f"journal page over {filters.values} took over {JOURNAL_PAGE_SECONDS} s") from exc
            raise

    async def _journal_page(
        self, filters: JournalFilters, tz: ZoneInfo, at: JournalKey | None, size: int, newer: bool
    ) -> JournalPage:
        query = filters.query(tz)
        backwards = newer and at is not None
        order = ASCENDING if backwards else DESCENDING
        docs: list[RequestDoc] = []
        if at is not None and _within(at.registered_at, query.get("registered_at", {})):
            rest = {k: v for k, v in query.items() if k != "registered_at"}
            ties = {"registered_at": at.registered_at, "_id": {"$gt" if backwards else "$lt": at.number}, **rest}
            cursor = self.journal.requests.find(ties, LISTED).sort("_id", order).limit(size + 1)
            docs = [d async for d in cursor if filters.keeps(d)]
        building = filters.building()
        if len(docs) <= size and building is not None:
            if at is not None:
                query["registered_at"] = {
                    **query.get("registered_at", {}),
                    ("$gt" if backwards else "$lt"): at.registered_at,
                }
            query.pop("address.key")
            docs.extend(await self._building_page(building, query, order, size + 1 - len(docs)))
        elif len(docs) <= size:
            indexed, residual = _one_equality_indexed(query)
            docs.extend(
                await self.journal.in_time_slices(
                    self.journal.requests,
                    "registered_at",
                    indexed,
                    size + 1 - len(docs),
                    start=at.registered_at if at is not None else None,
                    ascending=backwards,
                    projection=LISTED,
                    residual=residual,
                )
            )
        more = len(docs) > size
        docs = docs[:size]
        if backwards:
            docs.reverse()
        await self.journal.with_inform(docs)
        first, last = (JournalKey.of(docs[0]), JournalKey.of(docs[-1])) if docs else (None, None)
        return JournalPage(
            requests=docs,
            newer=first if (at is not None and (not backwards or more)) else None,
            older=last if (more or backwards) else None,
        )

    async def _building_page(self, building: str, query: dict[str, Any], order: int, limit: int) -> list[RequestDoc]:
        """A building's requests, newest (or with ``order`` ascending, oldest) first: the house itself and its
        blocks («Ленина 5» and «Ленина 5 корп. 2»), each read limited through the address index. One key
        range over «ленина|5…» also read houses 50 to 59 and sorted them all."""
        found: list[RequestDoc] = []
        for keys in (building, {"$gte": building + "|", "$lt": building + "|\uffff"}):
            cursor = self.journal.requests.find({"address.key": keys, **query}, LISTED)
            found.extend([d async for d in cursor.sort([("registered_at", order), ("_id", order)]).limit(limit)])
        found.sort(key=lambda d: (d["registered_at"], d["_id"]), reverse=order == DESCENDING)
        return found[:limit]

    async def export_batches(
        self, filters: JournalFilters, tz: ZoneInfo, size: int = EXPORT_BATCH
    ) -> AsyncIterator[list[tuple[RequestDoc, ContactDoc | None]]]:
        """The requests matching ``filters``, oldest first, with their residents' cards, a batch at a time: an
        export of years holds one batch in memory, not the journal."""
        cursor = self.journal.requests.find(filters.query(tz), LISTED).sort("registered_at", ASCENDING)
        batch: list[RequestDoc] = []
        async for doc in cursor.batch_size(size):
            if not filters.keeps(doc):
                continue
            batch.append(doc)
            if len(batch) >= size:
                yield await self._with_people(batch)
                batch = []
        if batch:
            yield await self._with_people(batch)

    async def _with_people(self, batch: list[RequestDoc]) -> list[tuple[RequestDoc, ContactDoc | None]]:
        await self.journal.with_inform(batch)
        people = await self.contacts_by_id(d.get("contact_id") for d in batch)
        return [(d, people.get(str(d.get("contact_id") or ""))) for d in batch]

    async def report_inputs(self, filters: JournalFilters, tz: ZoneInfo) -> tuple[list[RequestDoc], list[TaskDoc]]:
        query = filters.query(tz)
        docs = await self.journal.with_inform(
            [d async for d in self.journal.requests.find(query, {"text": 0, "text_history": 0, "attachments": 0})]
        )
        task_query = {"missed_at": query["registered_at"]} if "registered_at" in query else {}
        tasks = [t async for t in self.journal.tasks.find(task_query)]
        return docs, tasks

    # -- reviewing and answering ---------------------------------------------------------

    async def mark_reviewed(self, conversation_id: str, by: str, now: datetime) -> set[str]:
        """Review every unreviewed message of a conversation; returns the requests those messages belong to."""
        cursor = self.journal.messages.find(
            {
                "conversation_id": conversation_id,
                "direction": "in",
                "review.done_at": None,
                "review.due_at": {"$ne": None},
            }
        )
        numbers: set[str] = set()
        async for message in cursor:
            review = message.get("review") or {}
            met = now <= review["due_at"]
            await self.journal.messages.update_one(
                {"_id": message["_id"]}, {"$set": {"review.done_at": now, "review.by": by, "review.met": met}}
            )
            if message.get("request_number"):
                numbers.add(str(message["request_number"]))
        await self.journal.conversations.update_one({"_id": conversation_id}, {"$set": {"unread": 0}})
        return numbers

    async def record_outbound(self, doc: MessageDoc) -> None:
        """Keep a message to a resident or an executor before it goes to the bus: the journal is the mailbox."""
        await self.journal.messages.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)

    async def answered(self, conversation_id: str, at: datetime, preview: str) -> None:
        """A dispatcher answered: the conversation no longer waits for one."""
        await self.journal.conversations.update_one(
            {"_id": conversation_id},
            {
                "$set": {"waiting_since": None, "last_message_at": at, "preview": preview[:200], "unread": 0},
                "$inc": {"messages": 1},
            },
        )

    async def set_conversation_state(self, conversation_id: str, state: dict[str, Any] | None) -> None:
        await self.journal.conversations.update_one({"_id": conversation_id}, {"$set": {"state": state}})

    async def release_conversation(self, conversation_id: str | None, number: str) -> None:
        """The request is closed: its conversation has no active request and waits for nobody."""
        await self.journal.conversations.update_one(
            {"_id": conversation_id, "active_request": number},
            {"$set": {"active_request": None, "emergency": False, "waiting_since": None}},
        )

    # -- changing a request ----------------------------------------------------------------

    async def change_request(self, number: str, fields: Mapping[str, Any], audit: AuditDoc) -> None:
        """Set fields of a request and write the audit entry describing the change, in one transaction:
        neither exists without the other."""
        await self._audited(number, {"$set": dict(fields)}, audit)

    async def add_note(self, number: str, note: dict[str, Any], audit: AuditDoc) -> None:
        await self._audited(number, {"$push": {"notes": note}, "$set": {"updated_at": note["at"]}}, audit)

    async def _audited(self, number: str, update: dict[str, Any], audit: AuditDoc) -> None:
        async def write(session: AsyncClientSession | None) -> None:
            await self.journal.requests.update_one({"_id": number}, update, session=session)
            await self.journal.record_audit(audit, session=session)

        await self.journal.atomically(write)

    async def survey_asked(self, number: str, at: datetime) -> None:
        await self.journal.requests.update_one({"_id": number}, {"$set": {"survey.asked_at": at}})

    async def record_correction(self, correction: CorrectionDoc) -> None:
        """A dispatcher's correction of the category: a labeled example for training the classifier."""
        await self.journal.corrections.insert_one(correction)

    async def complete_clock(self, number: str, clock: str, by: str, at: datetime) -> bool:
        """Mark one clock of a request met or missed as of ``at``; False when it was done already or is absent."""
        request = await self.journal.requests.find_one({"_id": number}, {"clocks": 1})
        clocks: dict[str, ClockDoc] = dict(request.get("clocks") or {}) if request is not None else {}
        entry = clocks.get(clock)
        if entry is None or entry.get("done_at") is not None:
            return False
        done = cast(ClockDoc, completed(entry, at, by))
        clocks[clock] = done
        fields: dict[str, Any] = {f"clocks.{clock}": done, "next_due_at": next_due(clocks)}
        if done.get("met") is False:
            fields["breached"] = True
        result = await self.journal.requests.update_one(
            {"_id": number, f"clocks.{clock}.done_at": None}, {"$set": fields}
        )
        return result.modified_count > 0

    async def close_incident(self, incident_id: str, at: datetime) -> None:
        await self.journal.incidents.update_one({"_id": incident_id}, {"$set": {"status": "closed", "closed_at": at}})

    async def complete_task(self, task_id: str, by: str, at: datetime, met: bool, note: str) -> None:
        await self.journal.tasks.update_one(
            {"_id": task_id},
            {"$set": {"status": "done", "done_at": at, "by": by, "met": met, "note": note}},
        )

    # -- the staff directory -------------------------------------------------------------

    async def add_staff(self, person: StaffDoc) -> None:
        await self.journal.staff.insert_one(person)

    async def update_staff(self, staff_id: str, fields: Mapping[str, Any]) -> bool:
        found = await self.journal.staff.update_one({"_id": staff_id}, {"$set": dict(fields)})
        return found.matched_count == 1

    async def set_crew_key(self, staff_id: str, key: str) -> bool:
        return await self.update_staff(staff_id, {"crew_key": key})

    async def person_by_crew_key(self, key: str) -> StaffDoc | None:
        return await self.journal.staff.find_one({"crew_key": key})

    async def person_by_link(self, conversation_key: str) -> StaffDoc | None:
        return await self.journal.staff.find_one({"links": conversation_key, "active": {"$ne": False}})

    async def link_chat(
        self, code_hash: str, channel: str, conversation_key: str, address: str, now: datetime
    ) -> StaffDoc | None:
        """Link an executor's chat by the one-time code they sent; the code is spent, and the chat becomes
        the executor's address on its channel."""
        return await self.journal.staff.find_one_and_update(
            {"telegram_code": code_hash, "telegram_code_until": {"$gt": now}, "active": {"$ne": False}},
            {
                "$addToSet": {"links": conversation_key},
                "$set": {channel: address},
                "$unset": {"telegram_code": "", "telegram_code_until": ""},
            },
            return_document=ReturnDocument.AFTER,
        )

    async def open_requests_of_executor(self, staff_id: str) -> list[RequestDoc]:
        cursor = self.journal.requests.find({"executor.id": staff_id, "status": {"$in": list(OPEN_STATUSES)}}, LISTED)
        return [doc async for doc in cursor.limit(200)]

    async def flat_history(self, request: RequestDoc, limit: int = 5) -> list[RequestDoc]:
        """Earlier requests from the same flat (the same building when the flat is unknown), newest first."""
        address = request.get("address") or {}
        key = address.get("key")
        if not key:
            return []
        query: dict[str, Any] = {"address.key": key, "registered_at": {"$lt": request["registered_at"]}}
        cursor = self.journal.requests.find(query, LISTED).sort("registered_at", DESCENDING).limit(50)
        flat = address.get("flat")
        found = [doc async for doc in cursor if not flat or (doc.get("address") or {}).get("flat") == flat]
        return found[:limit]

    async def first_crew_action(self, action_id: str, number: str, staff_id: str, step: str, at: datetime) -> bool:
        """Record an action from the crew app once; False when the phone sent it before."""
        try:
            await self.journal.crew_actions.insert_one(
                {"_id": action_id, "request": number, "staff_id": staff_id, "step": step, "at": at}
            )
        except DuplicateKeyError:
            return False
        return True

    async def crew_progress(self, number: str, step: str, at: datetime) -> None:
        await self.journal.requests.update_one({"_id": number}, {"$set": {f"crew.{step}": at, "updated_at": at}})

    async def prices(self) -> list[dict[str, Any]]:
        return [p async for p in self.journal.db["prices"].find({"active": {"$ne": False}}).sort("name", 1)]

    async def add_price(self, entry: dict[str, Any]) -> None:
        await self.journal.db["prices"].insert_one(entry)

    async def remove_price(self, price_id: str) -> None:
        await self.journal.db["prices"].update_one({"_id": price_id}, {"$set": {"active": False}})

    async def deactivate_staff(self, staff_id: str) -> None:
        await self.journal.staff.update_one({"_id": staff_id}, {"$set": {"active": False}})

    async def requests_of(self, numbers: Iterable[str | None]) -> dict[str, RequestDoc]:
        return await self.journal.requests_by_number(numbers, LISTED)

    # -- the inbox list, teamwork -------------------------------------------------------------

    async def inbox_conversations(self, recent: int = 200, open_limit: int = OPEN_LISTED) -> list[ConversationDoc]:
        """Every conversation with something open (a request, a message waiting), and the latest others.
        Each is found through its own index: a range over the type of a field set only when open (a string,
        a time) is an index scan, where ``$ne: None`` would read every conversation."""
        j = self.journal
        found: dict[str, ConversationDoc] = {}
        for query in ({"active_request": {"$gt": ""}}, {"waiting_since": {"$gt": EPOCH}}):
            async for conv in j.conversations.find(query, LISTED_CONVERSATION).limit(open_limit):
                found[conv["_id"]] = conv
        newest = await j.in_time_slices(j.conversations, "last_message_at", {}, recent, projection=LISTED_CONVERSATION)
        for conv in newest:
            found.setdefault(conv["_id"], conv)
        return list(found.values())

    async def conversations_by_id(self, ids: Iterable[str]) -> dict[str, ConversationDoc]:
        wanted = sorted(set(ids))
        found: dict[str, ConversationDoc] = {}
        for chunk in chunks(wanted):
            cursor = self.journal.conversations.find({"_id": {"$in": chunk}}, LISTED_CONVERSATION)
            found.update({c["_id"]: c async for c in cursor})
        return found

    async def conversations_since(self, at: datetime) -> list[ConversationDoc]:
        """Conversations with a message at ``at`` or later (the newest the caller holds comes back too)."""
        cursor = self.journal.conversations.find({"last_message_at": {"$gte": at}}, LISTED_CONVERSATION)
        return [c async for c in cursor.limit(OPEN_LISTED)]

    async def contacts_by_id(self, ids: Iterable[str | None]) -> dict[str, ContactDoc]:
        found: dict[str, ContactDoc] = {}
        for chunk in chunks(sorted({i for i in ids if i})):
            found.update({c["_id"]: c async for c in self.journal.contacts.find({"_id": {"$in": chunk}})})
        return found

    async def set_taken(
        self, conversation_id: str, taken: dict[str, Any] | None, unless_taken_by_other: str | None = None
    ) -> bool:
        """Who works a conversation now (None: nobody). With ``unless_taken_by_other`` (a login), only when
        nobody else has it: two dispatchers taking it at once get one success."""
        query: dict[str, Any] = {"_id": conversation_id}
        if unless_taken_by_other is not None:
            query["$or"] = [{"taken": None}, {"taken.login": unless_taken_by_other}]
        result = await self.journal.conversations.update_one(query, {"$set": {"taken": taken}})
        return result.matched_count > 0

    async def stop_clocks(self, number: str, by: str, at: datetime) -> list[str]:
        """Close every clock still running on a request being closed; the inform clock keeps the time of the
        delivery that informed the resident, if one did. Returns the names of the clocks the closing stopped
        (not those a delivery had met already)."""
        request = await self.journal.requests.find_one({"_id": number}, {"clocks": 1})
        if request is None:
            return []
        informed = await self.journal.inform_times([number])
        clocks: dict[str, ClockDoc] = dict(request.get("clocks") or {})
        stopped: list[str] = []
        fields: dict[str, Any] = {}
        for name, clock in clocks.items():
            if clock.get("done_at") is not None:
                continue
            when = informed.get(number, at) if name == "inform" else at
            who = "hub" if name == "inform" and number in informed else by
            done = cast(ClockDoc, completed(clock, when, who))
            clocks[name] = done
            fields[f"clocks.{name}"] = done
            if done.get("met") is False:
                fields["breached"] = True
            if who != "hub":
                stopped.append(name)
        if fields:
            fields["next_due_at"] = next_due(clocks)
            await self.journal.requests.update_one({"_id": number}, {"$set": fields})
        return stopped

    async def open_requests(self, limit: int = 500) -> list[RequestDoc]:
        """Requests not yet closed, the one whose clock runs out first first."""
        cursor = (
            self.journal.requests.find({"status": {"$in": list(OPEN_STATUSES)}}, LISTED)
            .sort("next_due_at", ASCENDING)
            .limit(limit)
        )
        docs = [d async for d in cursor]
        await self.journal.with_inform(docs)
        return docs

    # -- staff notes, canned replies, presence ----------------------------------------------------

    async def add_staff_note(self, note: StaffNoteDoc) -> None:
        await self.journal.staff_notes.insert_one(note)

    async def thread_notes(self, conversation_ids: Iterable[str]) -> list[StaffNoteDoc]:
        ids = sorted(set(conversation_ids))
        cursor = self.journal.staff_notes.find({"conversation_id": {"$in": ids}}).sort("at", ASCENDING).limit(500)
        return [n async for n in cursor]

    async def shift_notes(self, limit: int = 30) -> list[StaffNoteDoc]:
        cursor = self.journal.staff_notes.find({"shift": True}).sort("at", DESCENDING).limit(limit)
        return [n async for n in cursor]

    async def canned_replies(self) -> list[CannedReplyDoc]:
        return [c async for c in self.journal.canned.find({}).sort("title", ASCENDING).limit(200)]

    async def add_canned_reply(self, doc: CannedReplyDoc) -> None:
        await self.journal.canned.insert_one(doc)

    async def delete_canned_reply(self, reply_id: str) -> None:
        await self.journal.canned.delete_one({"_id": reply_id})

    async def mark_present(self, login: str, name: str, role: str, at: datetime) -> None:
        await self.journal.presence.update_one(
            {"_id": login}, {"$set": {"name": name, "role": role, "at": at}}, upsert=True
        )

    async def present(self, since: datetime) -> list[PresenceDoc]:
        return [p async for p in self.journal.presence.find({"at": {"$gte": since}}).sort("name", ASCENDING)]

    # -- people -------------------------------------------------------------------------------

    async def contact(self, contact_id: str) -> ContactDoc | None:
        return await self.journal.contacts.find_one({"_id": contact_id})

    async def identities_elsewhere(self, contact_id: str, identities: list[str]) -> bool:
        """Whether another person's card already holds one of these identities."""
        if not identities:
            return False
        found = await self.journal.contacts.find_one({"identities": {"$in": identities}, "_id": {"$ne": contact_id}})
        return found is not None

    async def person_activity(self, contact_id: str) -> tuple[list[ConversationDoc], list[RequestDoc]]:
        j = self.journal
        conversations = [c async for c in j.conversations.find({"contact_id": contact_id}).limit(100)]
        requests = [
            r
            async for r in j.requests.find({"contact_id": contact_id}, {"text_history": 0})
            .sort("registered_at", DESCENDING)
            .limit(200)
        ]
        return conversations, requests

    async def person_events(self, contact_id: str) -> list[PersonEventDoc]:
        cursor = self.journal.person_events.find({"contact": contact_id}).sort("at", ASCENDING).limit(200)
        return [e async for e in cursor]

    async def edit_person(self, contact_id: str, fields: Mapping[str, Any], event: PersonEventDoc) -> None:
        """Change a person's card and record who did it; their requests show the new name and phone."""
        j = self.journal

        async def write(session: AsyncClientSession | None) -> None:
            await j.contacts.update_one({"_id": contact_id}, {"$set": dict(fields)}, session=session)
            snapshot: dict[str, Any] = {"updated_at": event["at"]}
            if "name" in fields:
                snapshot["contact.name"] = fields["name"]
            if fields.get("phones"):
                snapshot["contact.phone"] = fields["phones"][0]
            if fields.get("emails"):
                snapshot["contact.email"] = fields["emails"][0]
            await j.requests.update_many({"contact_id": contact_id}, {"$set": snapshot}, session=session)
            await j.person_events.insert_one(event, session=session)

        await j.atomically(write)

    async def merge_people(self, keep: str, other: str, event: PersonEventDoc) -> None:
        await self.journal.merge_contacts(keep, [other], [])
        await self.journal.person_events.insert_one(event)
