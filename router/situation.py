"""Loading the situation a message lands in: who wrote it, which conversation, which requests it names.

The router reads everything a round of messages needs in a few round trips, then
the dialogue decides each message from its ``Situation`` without I/O.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from adshub.contract import Inbound
from bots.dialogue import RequestView, Situation, State, Step, request_number_in
from domain.address import Address, extract_address
from domain.buildings import canonical, match_building
from domain.phones import extract_phones, normalize_phone
from domain.schedule import Offered
from journal.documents import (
    BuildingDoc,
    ContactDoc,
    ConversationDoc,
    IncidentDoc,
    MessageDoc,
    RequestDoc,
    address_of,
)
from journal.repository import Journal

log = logging.getLogger("adshub.router")

REPLAYED = ("state", "active_request", "last_request", "waiting_since", "emergency", "category")
"""What a message changes in its conversation, kept as it was before, for a redelivery to plan from."""


@dataclass
class Work:
    """One inbound message on its way through a round."""

    inbound: Inbound
    contact: ContactDoc
    conversation: ConversationDoc
    new_contact: bool = False
    new_conversation: bool = False
    step: Step | None = None
    number: str | None = None
    request: RequestDoc | None = None
    new_request: bool = False
    looked_up: RequestDoc | None = None
    replaces: str | None = None
    """A late transcript or edit of a message that never became a request: its id."""
    address_unknown: bool = False
    incident: IncidentDoc | None = None
    """The incident this registration joined (another request is its master)."""
    recovered: bool = False
    """The request this message registers was written by an attempt that died before the message was."""
    replayed: bool = False
    """The conversation already shows this message's effects; it was planned from the state before them."""
    extracted: Address | None = None
    """The address the message names, at the directory's spelling when the directory knows the house."""
    offered: list[Offered] = field(default_factory=list)
    """Visit times the resident may choose from, for a new request of a category where residents choose."""


@dataclass
class Loaded:
    """What a round read from the journal."""

    seen: dict[str, MessageDoc]
    work: list[Work]
    related: dict[str, RequestDoc] = field(default_factory=dict)
    thread_numbers: dict[str, str] = field(default_factory=dict)


def view(doc: RequestDoc | None) -> RequestView | None:
    """What the dialogue needs to know of a stored request."""
    if doc is None:
        return None
    return RequestView(
        number=doc["_id"],
        category=doc["category"],
        emergency=bool(doc.get("emergency")),
        status=doc.get("status", "registered"),
        contact_id=doc.get("contact_id"),
        address=address_of(doc.get("address")),
        deadline=doc.get("deadline"),
        registered_at=doc.get("registered_at"),
    )


class BuildingsDirectory:
    """The company's buildings directory, re-read at most once a minute."""

    def __init__(self, journal: Journal, max_age: float = 60.0) -> None:
        self.journal = journal
        self.max_age = max_age
        self._docs: list[BuildingDoc] = []
        self._read = -1e9

    async def docs(self) -> list[BuildingDoc]:
        if time.monotonic() - self._read > self.max_age:
            self._docs = await self.journal.buildings_directory()
            self._read = time.monotonic()
        return self._docs

    async def locate(self, work: list[Work]) -> None:
        """The address each message names; one naming a house the directory lacks is marked unknown."""
        directory = await self.docs()
        streets = {d.get("street_key") or d["key"].split("|")[0] for d in directory}
        for w in work:
            w.extracted = extract(w.inbound, streets)
        if not directory:
            return
        for w in work:
            found = w.extracted
            if found is None or not found.has_house:
                continue
            building = match_building(found, directory)
            if building is not None:
                w.extracted = canonical(found, building)
            else:
                w.address_unknown = True


def extract(inbound: Inbound, streets: Collection[str] = ()) -> Address | None:
    return extract_address(inbound.text, streets) if inbound.text else None


async def load_round(journal: Journal, inbounds: list[Inbound]) -> tuple[Loaded, list[MessageDoc]]:
    """Who, where and what for a round of messages of distinct conversations; returns the replies of
    messages already processed too, so that a redelivery resends those not yet delivered."""
    ids = [m.id for m in inbounds]
    edit_targets = [m.edit_of for m in inbounds if m.edit_of]
    seen = await journal.processed(ids + edit_targets)
    done = [i for i in ids if i in seen]
    replays = await journal.replies_to([seen[i] for i in done]) if done else []
    fresh = [unregistered_edit(m, seen) for m in inbounds if m.id not in seen]
    if not fresh:
        return Loaded(seen, []), replays
    contacts = await resolve_contacts(journal, fresh)
    known = await journal.conversations_by_id({m.conversation_key for m in fresh})
    work = []
    for m in fresh:
        contact, new_contact = contacts[m.id]
        conversation = known.get(m.conversation_key)
        w = Work(
            m,
            contact,
            conversation or new_conversation(m, contact),
            new_contact=new_contact,
            new_conversation=conversation is None,
        )
        if conversation is None:
            known[m.conversation_key] = w.conversation
        replay(w)
        if m.payload.get("replaces"):
            w.replaces = str(m.payload["replaces"])
        work.append(w)
    return Loaded(seen, work), replays


async def load_related(journal: Journal, loaded: Loaded) -> None:
    """The requests the round's messages may concern: the conversations' own, those a mail thread refers
    to, the one an edit changes and those named by number (``/status 2026-000123``, a survey button)."""
    refs = [r for w in loaded.work for r in w.inbound.thread]
    loaded.thread_numbers = await journal.numbers_by_external_refs(refs) if refs else {}
    wanted: set[str] = set()
    for w in loaded.work:
        conv = w.conversation
        state = conv.get("state") or {}
        wanted.update(n for n in (conv.get("active_request"), state.get("number"), conv.get("last_request")) if n)
        wanted.update(loaded.thread_numbers.get(r, "") for r in w.inbound.thread)
        if w.inbound.edit_of and loaded.seen.get(w.inbound.edit_of):
            wanted.add(loaded.seen[w.inbound.edit_of].get("request_number") or "")
        for text in (
            w.inbound.subject or "",
            str(w.inbound.payload.get("args") or ""),
            str(w.inbound.payload.get("data") or ""),
            w.inbound.text if w.inbound.kind == "command" else "",
        ):
            number = request_number_in(text)
            if number:
                wanted.add(number)
    loaded.related = await journal.requests_by_number(wanted)


def situation_of(w: Work, loaded: Loaded, now: datetime) -> Situation:
    """The message, its conversation's state and the requests it may concern, for the dialogue."""
    conv = w.conversation
    inbound = w.inbound
    related = loaded.related
    active = related.get(conv.get("active_request") or "")
    threaded_number = next(
        (loaded.thread_numbers[r] for r in reversed(inbound.thread) if r in loaded.thread_numbers), None
    )
    threaded_number = threaded_number or request_number_in(inbound.subject or "")
    threaded = related.get(threaded_number or "")
    if threaded is not None and threaded.get("contact_id") != w.contact["_id"]:
        threaded = None
    lookup = request_number_in(str(inbound.payload.get("args") or inbound.payload.get("data") or ""))
    if inbound.kind == "command" and not lookup:
        lookup = conv.get("active_request") or conv.get("last_request")
    w.looked_up = related.get(lookup or "")
    return Situation(
        inbound=inbound,
        now=now,
        state=State.from_dict(dict(conv.get("state") or {})),
        active=view(active),
        threaded=view(threaded),
        looked_up=view(w.looked_up),
        remembered_address=address_of(w.contact.get("address")),
        contact_id=w.contact["_id"],
        address_unknown=w.address_unknown,
    )


def replay(w: Work) -> None:
    """A conversation updated by an attempt that died before recording the message shows the message's
    own effects (its request as the active one); plan the redelivery from the state before them."""
    snapshot = w.conversation.get("replay") or {}
    if snapshot.get("message_id") != w.inbound.id:
        return
    w.conversation = {
        **w.conversation,
        "state": snapshot.get("state"),
        "active_request": snapshot.get("active_request"),
        "last_request": snapshot.get("last_request"),
        "waiting_since": snapshot.get("waiting_since"),
        "emergency": bool(snapshot.get("emergency")),
        "category": snapshot.get("category"),
    }
    w.replayed = True


def unregistered_edit(inbound: Inbound, seen: dict[str, MessageDoc]) -> Inbound:
    """An edit of a message that never became a request is planned as a message of its own."""
    if inbound.kind != "edit" or not inbound.edit_of:
        return inbound
    original = seen.get(inbound.edit_of)
    if original is None or original.get("request_number"):
        return inbound
    kind = original.get("kind") if original.get("kind") in ("message", "voicemail") else "message"
    payload = {**inbound.payload, "replaces": original["_id"]}
    return inbound.model_copy(update={"kind": kind, "edit_of": None, "payload": payload})


def new_conversation(m: Inbound, contact: ContactDoc) -> ConversationDoc:
    return {
        "_id": m.conversation_key,
        "channel": m.channel,
        "address": m.address,
        "contact_id": contact["_id"],
        "created_at": m.received_at,
        "state": None,
        "active_request": None,
        "last_request": None,
        "unread": 0,
        "messages": 0,
        "emergency": False,
        "waiting_since": None,
        "last_message_at": m.received_at,
        "title": m.sender.name,
    }


# -- who wrote it ---------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Who a message says its sender is: the channel identity, phones and emails it carries."""

    identities: list[str]
    phones: list[str]
    emails: list[str]
    name: str | None


def identity_claim(inbound: Inbound) -> Claim:
    phones = []
    if inbound.sender.phone:
        phone = normalize_phone(inbound.sender.phone)
        if phone:
            phones.append(phone)
    if inbound.text and inbound.kind in ("message", "voicemail", "command"):
        phones.extend(p for p in extract_phones(inbound.text) if p not in phones)
    emails = [inbound.sender.email.lower()] if inbound.sender.email else []
    identities = [inbound.identity, *(f"phone:{p}" for p in phones), *(f"email:{e}" for e in emails)]
    return Claim(list(dict.fromkeys(identities)), phones, emails, inbound.sender.name)


def new_contact(claim: Claim, inbound: Inbound) -> ContactDoc:
    return {
        "_id": uuid.uuid4().hex,
        "name": claim.name,
        "identities": claim.identities,
        "phones": claim.phones,
        "emails": claim.emails,
        "address": None,
        "created_at": inbound.received_at,
        "updated_at": inbound.received_at,
    }


async def resolve_contacts(journal: Journal, inbounds: Sequence[Inbound]) -> dict[str, tuple[ContactDoc, bool]]:
    """Who wrote each message (and whether they are new): one person may have Telegram, VK, email and
    phone identities; contacts that turn out to be one person are merged."""
    claims = {m.id: identity_claim(m) for m in inbounds}
    for _attempt in range(len(inbounds) + 3):
        keys = {k for c in claims.values() for k in c.identities}
        docs = await journal.contacts_by_identity(keys)
        by_key = {k: d for d in docs for k in d.get("identities", [])}
        result: dict[str, tuple[ContactDoc, bool]] = {}
        new_docs: dict[str, ContactDoc] = {}
        merged_any = False
        for inbound in inbounds:
            claim = claims[inbound.id]
            matched = {by_key[k]["_id"]: by_key[k] for k in claim.identities if k in by_key}
            if not matched:
                primary = claim.identities[0]
                doc = new_docs.get(primary)
                if doc is None:
                    doc = new_contact(claim, inbound)
                    for key in claim.identities:
                        new_docs.setdefault(key, doc)
                result[inbound.id] = (doc, True)
                continue
            ordered = sorted(matched.values(), key=lambda d: d.get("created_at") or inbound.received_at)
            keep = ordered[0]
            if len(ordered) > 1:
                merged = [d["_id"] for d in ordered[1:]]
                log.info("merging contacts %s into %s", merged, keep["_id"], extra={"message_id": inbound.id})
                await journal.merge_contacts(keep["_id"], merged, claim.identities)
                merged_any = True
                break
            missing = [k for k in claim.identities if k not in keep.get("identities", [])]
            if missing or (claim.name and not keep.get("name")):
                await journal.add_identities(
                    keep["_id"], missing, claim.phones, claim.emails, claim.name if not keep.get("name") else None
                )
                keep = {
                    **keep,
                    "identities": [*keep.get("identities", []), *missing],
                    "phones": sorted({*keep.get("phones", []), *claim.phones}),
                }
            result[inbound.id] = (keep, False)
        if not merged_any:
            return result
    raise RuntimeError("could not resolve contacts")
