"""Pure builders of the journal's documents from the router's decisions.

No I/O here: the router gathers the situation, ``bots.dialogue.plan`` decides,
these functions shape what gets written, and the journal writes it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from adshub.contract import Inbound, Outbound
from bots.dialogue import Draft
from router.address import Address
from router.categories import info
from router.deadlines import DeadlinePolicy, planned_deadline, regulatory_clocks

VOICE_CHANNELS = frozenset({"voicemail"})


def building_key(address: Address | None) -> str | None:
    """A stable key of a building for history and incident grouping: «ленина|7|2»."""
    if address is None or not address.street or not address.house:
        return None
    street = re.sub(r"[^а-яa-z0-9]+", " ", address.street.lower().replace("ё", "е")).strip()
    return "|".join([street, address.house.lower(), (address.building or "").lower()]).rstrip("|")


def address_doc(address: Address | None) -> dict[str, Any] | None:
    if address is None:
        return None
    doc: dict[str, Any] = address.as_dict()
    doc["key"] = building_key(address)
    return doc


def clocks_doc(
    category: str, registered_at: datetime, received_at: datetime, policy: DeadlinePolicy, electronic: bool = True
) -> dict[str, dict[str, Any]]:
    return _clock_entries(
        regulatory_clocks(category, registered_at, policy, received_at=received_at, electronic=electronic)
    )


def _clock_entries(clocks: list[Any]) -> dict[str, dict[str, Any]]:
    return {
        c.name: {
            "label": c.label,
            "due_at": c.due_at,
            "basis": c.basis,
            "done_at": None,
            "met": None,
            "warned_at": None,
            "by": None,
        }
        for c in clocks
    }


def request_doc(
    *,
    number: str,
    year: int,
    seq: int,
    draft: Draft,
    inbound: Inbound,
    contact: dict[str, Any],
    conversation_id: str,
    registered_at: datetime,
    policy: DeadlinePolicy,
) -> dict[str, Any]:
    c = draft.classification
    category = info(c.category)
    clocks = regulatory_clocks(c.category, registered_at, policy, received_at=draft.received_at, electronic=True)
    clocks_map = _clock_entries(clocks)
    due = [clock.due_at for clock in clocks]
    return {
        "_id": number,
        "number": number,
        "year": year,
        "seq": seq,
        "source_message_id": draft.source_message_id,
        "message_ids": list(draft.message_ids),
        "registered_at": registered_at,
        "received_at": draft.received_at,
        "channel": inbound.channel,
        "conversation_id": conversation_id,
        "contact_id": contact["_id"],
        "contact": {
            "name": contact.get("name"),
            "phone": (contact.get("phones") or [None])[0],
            "email": (contact.get("emails") or [None])[0],
        },
        "address": address_doc(draft.address),
        "location": inbound.location.model_dump() if inbound.location else None,
        "text": draft.text,
        "text_history": [],
        "category": c.category.value,
        "emergency": c.emergency,
        "confidence": c.confidence,
        "phrases": list(c.phrases),
        "classified_by": "hub",
        "status": "registered",
        "clocks": clocks_map,
        "next_due_at": min(due) if due else None,
        "deadline": planned_deadline(clocks),
        "executor": None,
        "visit": None,
        "notes": [],
        "result": None,
        "closed_at": None,
        "survey": {"rating": None, "comment": None, "rated_at": None, "asked_at": None},
        "municipal_notice": {
            "required": category.notify_municipality,
            "status": "pending" if category.notify_municipality else None,
            "sent_at": None,
        },
        "attachments": [a.model_dump() for a in inbound.attachments],
        "updated_at": registered_at,
    }


def inbound_doc(
    inbound: Inbound,
    *,
    conversation_id: str,
    contact_id: str | None,
    request_number: str | None,
    classification: dict[str, Any] | None,
    review_due_at: datetime,
    needs_review: bool = True,
) -> dict[str, Any]:
    return {
        "_id": inbound.id,
        "direction": "in",
        "kind": inbound.kind,
        "conversation_id": conversation_id,
        "contact_id": contact_id,
        "channel": inbound.channel,
        "address": inbound.address,
        "sender": inbound.sender.model_dump(),
        "text": inbound.text,
        "attachments": [a.model_dump() for a in inbound.attachments],
        "location": inbound.location.model_dump() if inbound.location else None,
        "at": inbound.received_at,
        "request_number": request_number,
        "classification": classification,
        "subject": inbound.subject,
        "external_ref": inbound.external_ref,
        "thread": inbound.thread,
        "auto_submitted": inbound.auto_submitted,
        "payload": inbound.payload,
        "edits": [],
        "review": {"due_at": review_due_at, "done_at": None, "by": None} if needs_review else None,
        "raw": inbound.raw,
    }


def outbound_doc(outbound: Outbound, *, contact_id: str | None, status: str = "pending") -> dict[str, Any]:
    return {
        "_id": outbound.id,
        "direction": "out",
        "kind": outbound.kind,
        "conversation_id": outbound.conversation_id,
        "contact_id": contact_id,
        "channel": outbound.channel,
        "address": outbound.address,
        "text": outbound.text,
        "buttons": [[b.model_dump() for b in row] for row in outbound.buttons],
        "request_number": outbound.request_number,
        "in_reply_to": outbound.in_reply_to,
        "at": outbound.created_at,
        "author": outbound.author,
        "delivery": {"status": status, "attempts": 0, "error": None, "sent_at": None},
        "outbound": outbound.model_dump(mode="json"),
    }


def reply_subject(subject: str | None, number: str | None) -> str | None:
    """«Re: <their subject> [Заявка № 2026-000123]» for channels that have subjects."""
    if subject is None:
        return None
    base = subject.strip() or "Ваше обращение"
    if not re.match(r"(?i)^re:", base):
        base = f"Re: {base}"
    if number and number not in base:
        base = f"{base} [Заявка № {number}]"
    return base[:900]


def reply_thread(inbound: Inbound) -> list[str]:
    refs = [*inbound.thread]
    if inbound.external_ref and inbound.external_ref not in refs:
        refs.append(inbound.external_ref)
    return refs[-20:]
