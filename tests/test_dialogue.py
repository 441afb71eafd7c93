"""The dialogue's decisions, as pure functions of the situation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adshub.contract import Inbound, Sender
from bots.dialogue import RequestView, Situation, State, plan
from domain.address import Address, extract_address

NOW = datetime(2026, 11, 24, 0, 12, tzinfo=UTC)


def inbound(text: str, *, kind: str = "message", mid: str = "1", **extra: Any) -> Inbound:
    return Inbound(
        id=f"telegram:42:{mid}",
        channel="telegram",
        address="42",
        sender=Sender(id="42"),
        kind=kind,
        text=text,
        received_at=NOW,
        **extra,
    )


def decide(text: str, **situation: Any) -> Any:
    message = situation.pop("message", None) or inbound(text)
    return plan(Situation(inbound=message, now=NOW, **situation), extract_address(message.text))


def open_request(**extra: Any) -> RequestView:
    values: dict[str, Any] = {
        "number": "2026-000007",
        "category": "water_accident",
        "emergency": True,
        "status": "registered",
        "contact_id": "c1",
    }
    values.update(extra)
    return RequestView(**values)


def test_emergency_is_registered_at_once_and_the_address_asked_after() -> None:
    step = decide("Прорвало трубу, хлещет вода!")
    assert step.action == "register"
    assert step.draft is not None and step.draft.classification.emergency
    assert step.replies[0].template == "registered" and step.replies[0].context["ask_address"] is True
    assert step.state.awaiting == "address_for"


def test_routine_request_without_address_asks_for_it_first() -> None:
    step = decide("лифт не работает")
    assert step.action == "ask"
    assert step.state.awaiting == "address" and step.state.pending["text"] == "лифт не работает"
    assert step.replies[0].template == "ask_address"


def test_the_answer_with_an_address_registers_the_waiting_request() -> None:
    waiting = State(
        "address", pending={"message_id": "telegram:42:1", "text": "лифт не работает", "received_at": NOW.isoformat()}
    )
    step = decide("ул. Ленина 12, подъезд 2", message=inbound("ул. Ленина 12, подъезд 2", mid="2"), state=waiting)
    assert step.action == "register" and step.draft is not None
    assert step.draft.source_message_id == "telegram:42:1"
    assert step.draft.classification.category.value == "elevator_fault"
    assert step.draft.address is not None and step.draft.address.street == "Ленина"
    assert step.remember_address is not None and step.state.awaiting is None


def test_a_remembered_address_lets_a_routine_request_register_directly() -> None:
    remembered = Address(street="Ленина", house="12", flat="45")
    step = decide("в подъезде не горит лампочка", remembered_address=remembered)
    assert step.action == "register" and step.draft is not None
    assert step.draft.address is not None and step.draft.address.house == "12"


def test_second_message_in_open_conversation_is_a_follow_up() -> None:
    step = decide("вода уже по колено, быстрее!", active=open_request())
    assert step.action == "attach" and step.number == "2026-000007"
    assert step.replies[0].template == "follow_up"


def test_a_different_emergency_in_an_open_conversation_is_a_new_request() -> None:
    step = decide("а ещё в подъезде сильно пахнет газом", active=open_request(category="roof_leak", emergency=False))
    assert step.action == "register"


def test_address_given_after_emergency_registration_is_added() -> None:
    step = decide("ул. Садовая, д. 3, кв. 62", state=State("address_for", number="2026-000007"), active=open_request())
    assert step.action == "attach" and step.address is not None and step.address.house == "3"
    assert step.replies[0].template == "address_added"


def test_auto_replies_are_stored_not_answered() -> None:
    message = inbound("Я в отпуске до 1 декабря", auto_submitted=True)
    step = decide("", message=message)
    assert step.action == "store" and step.replies == ()


def test_status_command_only_for_own_requests() -> None:
    mine = open_request(contact_id="c1")
    message = inbound("/status 2026-000007", kind="command", payload={"command": "status", "args": "2026-000007"})
    step = decide("", message=message, looked_up=mine, contact_id="c1")
    assert step.action == "status" and step.replies[0].template == "status"
    other = decide("", message=message, looked_up=open_request(contact_id="c2"), contact_id="c1")
    assert other.replies[0].template == "status_not_found"


def test_start_greets_and_start_with_text_is_a_message() -> None:
    greet = decide("", message=inbound("/start", kind="command", payload={"command": "start", "args": ""}))
    assert greet.action == "greet"
    msg = inbound(
        "/start нет горячей воды с утра",
        kind="command",
        payload={"command": "start", "args": "нет горячей воды с утра"},
    )
    step = decide("", message=msg)
    assert step.action == "register" and step.draft is not None
    assert step.draft.classification.category.value == "utility_outage"


def test_survey_rating_and_comment() -> None:
    rate = decide(
        "",
        message=inbound("", kind="callback", payload={"data": "survey:2026-000007:5"}),
        looked_up=open_request(status="done"),
        contact_id="c1",
    )
    assert rate.action == "rate" and rate.rating == 5 and rate.state.awaiting == "survey_comment"
    comment = decide("всё сделали быстро, спасибо", state=rate.state)
    assert comment.action == "comment" and comment.comment == "всё сделали быстро, спасибо"


def test_greeting_only_asks_what_happened() -> None:
    step = decide("Здравствуйте!")
    assert step.action == "ask" and step.state.awaiting == "description"
