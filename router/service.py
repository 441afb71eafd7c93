"""The router: from an inbound message on the bus to a registered request, a
reply on the resident's channel and events for the dispatcher inbox.

It consumes in batches so that under load one round trip to the database
serves many messages; under light load a batch is a single message. Messages
of one conversation in a batch go in rounds, one after another. A round is:
load the situation (``situation``), let the dialogue decide each message,
number the registrations and link incidents (``numbering``), turn each decision
into journal changes and replies (``effects``), and commit the plan. The bus
side — acks, backoff, dead letters — is ``consumer``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from adshub.bus import Bus, Delivery, Finish
from adshub.contract import Inbound, Outbound, utcnow
from adshub.metrics import METRICS
from bots.dialogue import plan as decide
from bots.texts import Texts
from domain.deadlines import DeadlinePolicy
from domain.schedule import RESIDENT_CHOOSES, can_go, offered_times
from journal.bookings import Bookings
from journal.documents import StaffDoc
from journal.plan import Plan
from journal.repository import Journal
from router.consumer import InboundConsumer
from router.effects import Outcome, Round, record
from router.numbering import number_and_link
from router.situation import BuildingsDirectory, Work, load_related, load_round, situation_of

log = logging.getLogger("adshub.router")

MAX_BATCH = 64
LANES = 1
"""Batches in flight at once; one conversation always stays in one lane."""
CREW_LINKS_TTL = 15.0
CREW_LINK = re.compile(r"^/(?:start|crew)\s+crew-[A-Za-z0-9_-]{6,64}$")
"""What an executor sends the bot once to link their chat (the deep link ``?start=crew-<code>``)."""


def is_crew_traffic(inbound: Inbound) -> bool:
    """The command that links an executor's chat, a press of a crew button (even from a chat linked a
    moment ago, before the router re-read the links), or a resident's choice of a visit time: what the
    crew side, which books executors' time, answers."""
    if inbound.kind == "callback":
        return str(inbound.payload.get("data") or "").startswith(("crew:", "slot:"))
    return bool(CREW_LINK.match(inbound.text.strip()))


class Router:
    def __init__(
        self,
        journal: Journal,
        bus: Bus,
        texts: Texts,
        policy: DeadlinePolicy,
        clock: Callable[[], datetime] = utcnow,
        phone_channel: str | None = None,
    ) -> None:
        self.journal = journal
        self.phone_channel = phone_channel
        self._crew_links: set[str] = set()
        self._links_read_at = -CREW_LINKS_TTL
        self._linking_until = 0.0
        self._staff: list[StaffDoc] = []
        self._staff_read_at = -CREW_LINKS_TTL
        self.bookings = Bookings(journal)
        """Where residents whose channel has no way back are told their request by phone number (SMS)."""
        self.bus = bus
        self.texts = texts
        self.policy = policy
        self.clock = clock
        self.directory = BuildingsDirectory(journal)
        self.consumer = InboundConsumer(bus, self.process)

    async def start(self) -> None:
        await self.bus.consume_inbound(self.handle, max_batch=MAX_BATCH, max_wait=0.002, lanes=LANES)

    async def handle(self, deliveries: list[Delivery]) -> Finish | None:
        return await self.consumer.handle(deliveries)

    async def _hand_to_crew(self, inbounds: Sequence[Inbound]) -> list[Inbound]:
        """Messages of executors' linked chats (and the command that links one) are not residents': they go on
        to the crew queue, which the dispatchers' side answers. The linked chats are re-read every
        ``CREW_LINKS_TTL`` seconds, and every round for a minute after a chat asked to be linked (the link is
        written by the crew side a moment later)."""
        now = time.monotonic()
        if now - self._links_read_at > CREW_LINKS_TTL or now < self._linking_until:
            self._crew_links = await self.journal.staff_links()
            self._links_read_at = now
        crew = [i for i in inbounds if i.conversation_key in self._crew_links or is_crew_traffic(i)]
        for inbound in crew:
            if inbound.kind != "callback" and inbound.conversation_key not in self._crew_links:
                self._linking_until = now + 60.0
            await self.bus.publish_crew(inbound)
        return [i for i in inbounds if i not in crew] if crew else list(inbounds)

    async def _offer_times(self, works: Sequence[Work], now: datetime) -> None:
        """For a new request where the resident chooses the time (minor repairs, paid works), the next free
        times of the executors who fit, to go with the registration as buttons."""
        wanted = [
            w
            for w in works
            if w.new_request
            and w.request is not None
            and w.inbound.answerable
            and not w.inbound.auto_submitted
            and w.request.get("category") in RESIDENT_CHOOSES
        ]
        if not wanted:
            return
        if time.monotonic() - self._staff_read_at > CREW_LINKS_TTL:
            self._staff = await self.journal.active_staff()
            self._staff_read_at = time.monotonic()
        for w in wanted:
            assert w.request is not None
            category = str(w.request.get("category"))
            people = [p for p in self._staff if can_go(p, category, (w.request.get("address") or {}).get("key"))]
            if not people:
                continue
            busy = await self.bookings.busy(
                [p["_id"] for p in people], now - timedelta(hours=4), now + timedelta(days=14)
            )
            w.offered = offered_times(people, busy, now, category, self.texts.tz)

    async def process(self, inbounds: Sequence[Inbound], redelivered: set[str] | None = None) -> Outcome:
        """Register, attach or answer each message; several messages of one conversation go in order."""
        inbounds = await self._hand_to_crew(inbounds)
        outcome = Outcome()
        rounds: list[list[Inbound]] = []
        depth: dict[str, int] = defaultdict(int)
        for inbound in inbounds:
            level = depth[inbound.conversation_key]
            depth[inbound.conversation_key] += 1
            while len(rounds) <= level:
                rounds.append([])
            rounds[level].append(inbound)
        for batch in rounds:
            await self._round(batch, redelivered or set(), outcome)
        return outcome

    async def _round(self, inbounds: list[Inbound], redelivered: set[str], outcome: Outcome) -> None:
        loaded, replays = await load_round(self.journal, inbounds)
        already = len(inbounds) - len(loaded.work)
        if already:
            METRICS.duplicates.labels(stage="router").inc(already)
        resent = [
            Outbound.model_validate(doc["outbound"])
            for doc in replays
            if (doc.get("delivery") or {}).get("status") != "sent"
        ]
        if resent:
            METRICS.replies_resent.inc(len(resent))
            outcome.outbounds.extend(resent)
        if not loaded.work:
            return
        await self.directory.locate(loaded.work)
        await load_related(self.journal, loaded)
        now = self.clock()
        for w in loaded.work:
            w.step = decide(situation_of(w, loaded, now), w.extracted)
        plan = Plan()
        await number_and_link(self.journal, self.policy, loaded.work, redelivered, now, plan)
        await self._offer_times(loaded.work, now)
        current = Round(plan, outcome, loaded, self.texts, self.policy, now, self.phone_channel)
        for w in loaded.work:
            record(w, current)
        await self.journal.commit(plan)
        for w in loaded.work:
            if w.request is not None:
                METRICS.registration_latency.observe(max(0.0, (now - w.inbound.received_at).total_seconds()))
