"""Numbers and incidents: every new registration of a round gets its number, and its incident.

One round trip reserves the numbers and finds the open incidents. A redelivered
message may have registered its request before the attempt died: it keeps that
number (and incident). Incidents are written after requests, so a recovered
master may have lost its incident: it is opened again, or, if another report
opened one meanwhile, the request joins that one.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from domain.address import building_key
from domain.deadlines import DeadlinePolicy, format_number, registration_year
from domain.incidents import WINDOW as INCIDENT_WINDOW
from domain.incidents import incident_of
from journal.documents import IncidentDoc, incident_doc, request_doc
from journal.plan import JoinIncident, Plan
from journal.repository import Journal
from router.situation import Work

Candidate = tuple[Work, str, str]
"""A registration that can group into an incident: its work, the incident's open key and kind."""


async def number_and_link(
    journal: Journal, policy: DeadlinePolicy, work: list[Work], redelivered: set[str], now: datetime, plan: Plan
) -> None:
    """Give every new registration its number and its incident, in one round trip to the journal.

    The existing request of a redelivered message is found by the draft's source, which for a registration
    completed by an answer (the address asked for) is the earlier message."""
    registering = [
        (w, w.step.draft.source_message_id)
        for w in work
        if w.step is not None and w.step.action == "register" and w.step.draft is not None
    ]
    wanted = [source for w, source in registering if w.inbound.id in redelivered]
    existing = await journal.requests_by_source(wanted) if wanted else {}
    need: list[Work] = []
    masters: list[Candidate] = []
    for w, source in registering:
        known = existing.get(source)
        if known is None:
            need.append(w)
            continue
        w.number, w.request, w.recovered = known["_id"], known, True
        incident = incident_of(known["category"], known.get("text", ""), (known.get("address") or {}).get("key"))
        if known.get("incident_id") == w.number and incident is not None:
            masters.append((w, *incident))
    candidates: list[Candidate] = []
    for w in need:
        assert w.step is not None and w.step.draft is not None
        draft = w.step.draft
        incident = incident_of(draft.classification.category.value, draft.text, building_key(draft.address))
        if incident is not None:
            candidates.append((w, *incident))
    year = registration_year(now, policy.tz)
    seqs, found = await asyncio.gather(
        journal.reserve_numbers(
            year,
            [w.step.draft.source_message_id for w in need if w.step and w.step.draft],
            maybe_reserved={
                w.step.draft.source_message_id for w in need if w.step and w.step.draft and w.inbound.id in redelivered
            },
        ),
        journal.open_incidents([key for _, key, _ in [*masters, *candidates]]),
    )
    _restore_incidents(masters, found, plan)
    for w, seq in zip(need, seqs, strict=True):
        assert w.step is not None and w.step.draft is not None
        w.number = format_number(year, seq)
        w.request = request_doc(
            number=w.number,
            year=year,
            seq=seq,
            draft=w.step.draft,
            inbound=w.inbound,
            contact=w.contact,
            conversation_id=w.conversation["_id"],
            registered_at=now,
            policy=policy,
        )
        w.new_request = True
    _link_incidents(candidates, found, now, plan)


def _restore_incidents(masters: list[Candidate], found: dict[str, IncidentDoc], plan: Plan) -> None:
    for w, key, kind in masters:
        assert w.request is not None and w.number is not None
        incident: IncidentDoc | None = found.get(key)
        if incident is None:
            incident = incident_doc(w.number, key, kind, w.request, w.request["registered_at"])
            found[key] = incident
            plan.opened_incidents.append(incident)
        elif incident["_id"] != w.number:
            w.incident = incident
            w.request["incident_id"] = incident["_id"]
            plan.request_changes.append(JoinIncident(w.number, incident["_id"]))


def _link_incidents(candidates: list[Candidate], found: dict[str, IncidentDoc], now: datetime, plan: Plan) -> None:
    """Reports of one accident at one building within hours of the first join its incident.

    Joining writes nothing to the incident: the link is the request's incident_id."""
    for key, opened in list(found.items()):
        if opened["opened_at"] < now - INCIDENT_WINDOW:
            plan.expired_incidents.append(opened["_id"])
            del found[key]
    for w, key, kind in candidates:
        assert w.request is not None and w.number is not None
        incident = found.get(key)
        if incident is None:
            incident = incident_doc(w.number, key, kind, w.request, now)
            found[key] = incident
            plan.opened_incidents.append(incident)
        else:
            w.incident = incident
        w.request["incident_id"] = incident["_id"]
