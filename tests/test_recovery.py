"""A router that dies in the middle of writing a batch: the redelivered message must be registered once,
under the number the first attempt took, and answered with that number (not as a follow-up to itself)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adshub.contract import Inbound, Sender
from journal.repository import Journal
from router.service import Router


class Crash(Exception):
    """The process died here."""


class CrashingCollection:
    """A collection whose chosen write dies before it reaches the server; everything else passes through."""

    def __init__(self, real: Any, method: str) -> None:
        self._real = real
        self._method = method

    def __getattr__(self, name: str) -> Any:
        if name == self._method:

            async def crash(*args: Any, **kwargs: Any) -> None:
                raise Crash(f"killed before {self._real.name}.{name}")

            return crash
        return getattr(self._real, name)


FIRST_MESSAGE_CRASHES = [
    ("requests", "insert_many"),
    ("incidents", "insert_many"),
    ("audit", "insert_many"),
    ("messages", "insert_many"),
]
"""A new conversation is inserted whole before the request; these are the points after it."""
LATER_MESSAGE_CRASHES = [*FIRST_MESSAGE_CRASHES, ("conversations", "bulk_write")]


def chat(session: str, n: int, text: str) -> Inbound:
    return Inbound(
        id=f"webchat:{session}:{n}",
        channel="webchat",
        address=session,
        sender=Sender(id=session),
        text=text,
        received_at=datetime.now(UTC),
    )


async def crash_then_redeliver(router: Router, journal: Journal, message: Inbound, where: tuple[str, str]) -> Any:
    collection, method = where
    real = getattr(journal, collection)
    setattr(journal, collection, CrashingCollection(real, method))
    try:
        with pytest.raises(Crash):
            await router.process([message])
    finally:
        setattr(journal, collection, real)
    return await router.process([message], redelivered={message.id})


async def assert_registered_once(journal: Journal, outcome: Any, session: str) -> dict[str, Any]:
    requests = [r async for r in journal.requests.find({"conversation_id": {"$regex": session}})]
    assert len(requests) == 1
    request = requests[0]
    (reply,) = outcome.outbounds
    assert reply.request_number == request["_id"]
    assert "зарегистрирована" in reply.text and request["_id"] in reply.text
    audit = [a async for a in journal.audit.find({"request": request["_id"], "action": "registered"})]
    assert len(audit) == 1
    if request.get("incident_id"):
        assert await journal.incidents.find_one({"_id": request["incident_id"]}) is not None
    return request


@pytest.mark.parametrize("where", FIRST_MESSAGE_CRASHES, ids=[f"{c}.{m}" for c, m in FIRST_MESSAGE_CRASHES])
async def test_a_first_message_interrupted_mid_write_is_registered_once(
    router: Router, journal: Journal, unique: str, where: tuple[str, str]
) -> None:
    session = f"crash{unique}{where[0]}"
    message = chat(session, 1, "Прорвало трубу, хлещет вода! ул. Ленина 5 кв 12")
    outcome = await crash_then_redeliver(router, journal, message, where)
    request = await assert_registered_once(journal, outcome, session)
    incident = await journal.incidents.find_one({"_id": request["incident_id"]})
    assert incident is not None and incident["master"] == request["_id"] and incident["status"] == "open"
    conversation = await journal.conversations.find_one({"_id": message.conversation_key})
    assert conversation is not None and conversation["unread"] == 1


@pytest.mark.parametrize("where", LATER_MESSAGE_CRASHES, ids=[f"{c}.{m}" for c, m in LATER_MESSAGE_CRASHES])
async def test_an_address_answer_interrupted_mid_write_registers_the_waiting_request_once(
    router: Router, journal: Journal, unique: str, where: tuple[str, str]
) -> None:
    session = f"answer{unique}{where[0]}"
    question = await router.process([chat(session, 1, "лифт не работает")])
    assert question.outbounds[0].request_number is None
    answer = chat(session, 2, "ул. Ленина 12, подъезд 2")
    outcome = await crash_then_redeliver(router, journal, answer, where)
    request = await assert_registered_once(journal, outcome, session)
    assert request["source_message_id"] == f"webchat:{session}:1"
    assert request["category"] == "elevator_fault" and request["incident_id"] == request["_id"]
    conversation = await journal.conversations.find_one({"_id": answer.conversation_key})
    assert conversation is not None and conversation["unread"] == 2


async def test_a_recovered_report_joins_the_incident_another_report_opened_meanwhile(
    router: Router, journal: Journal, unique: str
) -> None:
    text = "Прорвало трубу, хлещет вода! ул. Ленина 5 кв {flat}"
    first = chat(f"first{unique}", 1, text.format(flat=12))
    real = journal.incidents
    journal.incidents = CrashingCollection(real, "insert_many")  # type: ignore[assignment]
    try:
        with pytest.raises(Crash):
            await router.process([first])
    finally:
        journal.incidents = real  # type: ignore[assignment]
    second = await router.process([chat(f"second{unique}", 1, text.format(flat=14))])
    opened_by = second.outbounds[0].request_number
    await router.process([first], redelivered={first.id})
    recovered = await journal.requests.find_one({"source_message_id": first.id})
    assert recovered is not None and recovered["_id"] != opened_by
    assert recovered["incident_id"] == opened_by
    assert [i["_id"] async for i in journal.incidents.find({})] == [opened_by]


async def test_a_message_redelivered_after_it_was_written_resends_its_undelivered_reply_and_nothing_else(
    router: Router, journal: Journal, unique: str
) -> None:
    """The router wrote everything and died before the reply left: the redelivery sends that reply again,
    the one stored, and registers nothing new."""
    message = chat(f"replay{unique}", 1, "Прорвало трубу, хлещет вода! ул. Ленина 7 кв 3")
    first = await router.process([message])
    (reply,) = first.outbounds
    again = await router.process([message], redelivered={message.id})
    assert [o.id for o in again.outbounds] == [reply.id] and again.outbounds[0].text == reply.text
    assert await journal.requests.count_documents({"source_message_id": message.id}) == 1
    await journal.messages.update_one({"_id": reply.id}, {"$set": {"delivery.status": "sent"}})
    assert (await router.process([message], redelivered={message.id})).outbounds == []
