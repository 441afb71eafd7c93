"""One dialogue for every chat channel: what the hub does with a resident's
message and what it says back.

``plan`` is a pure function of the situation (the message, the conversation's
state, the open request, what the resident told us before) and returns a
``Step``. The router does the I/O: it loads the situation, numbers the request,
writes the journal and renders the replies from templates/.

Rules that matter to residents and to the law:
- an emergency is registered at once, even without an address; the question
  for the address follows;
- a routine request without an address gets a question for street, house and
  flat (and a phone) first; the answer registers it, and the address is
  remembered for the person;
- a further message in an open conversation is attached to its request;
- machine-generated mail (auto-replies, bounces) is stored, never answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from adshub.contract import Button, Inbound, OutboundKind
from domain.address import Address
from domain.categories import Category, info
from domain.classify import Classification, classify

NUMBER_RE = re.compile(r"(?<!\d)(20\d{2})\s*[-–/]\s*(\d{1,6})(?!\d)")
CLOSED_STATUSES = frozenset({"done", "cancelled"})
GREETINGS = frozenset(
    {
        "здравствуйте",
        "здравствуй",
        "привет",
        "добрый",
        "день",
        "вечер",
        "утро",
        "доброе",
        "доброй",
        "ночи",
        "алло",
        "ау",
        "hello",
        "hi",
        "start",
        "начать",
        "ээ",
        "э",
        "да",
        "слушаю",
        "ок",
        "ok",
    }
)

VOICE_WITHOUT_TRANSCRIPT = "Голосовое сообщение (расшифровки пока нет)"

Action = Literal[
    "register",
    "attach",
    "store",
    "edit",
    "status",
    "greet",
    "ask",
    "rate",
    "comment",
    "callback_task",
]


@dataclass(frozen=True)
class RequestView:
    """What the dialogue needs to know about a registered request."""

    number: str
    category: str
    emergency: bool
    status: str
    contact_id: str | None = None
    address: Address | None = None
    deadline: datetime | None = None
    registered_at: datetime | None = None

    @property
    def closed(self) -> bool:
        return self.status in CLOSED_STATUSES


@dataclass(frozen=True)
class State:
    """What the conversation is waiting for.

    ``awaiting`` is None, ``address`` (a routine request waits for its address;
    ``pending`` holds it), ``address_for`` (request ``number`` was registered
    without an address), ``description`` (we got only a photo or a greeting),
    ``survey_comment`` (request ``number`` was rated; a comment may follow).
    """

    awaiting: str | None = None
    number: str | None = None
    pending: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any] | None:
        if self.awaiting is None:
            return None
        return {"awaiting": self.awaiting, "number": self.number, "pending": self.pending}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> State:
        if not data:
            return cls()
        return cls(awaiting=data.get("awaiting"), number=data.get("number"), pending=dict(data.get("pending") or {}))


@dataclass(frozen=True)
class Situation:
    inbound: Inbound
    now: datetime
    state: State = field(default_factory=State)
    active: RequestView | None = None
    threaded: RequestView | None = None
    looked_up: RequestView | None = None
    remembered_address: Address | None = None
    address_unknown: bool = False
    """The message names a house that is not in the company's buildings directory."""
    contact_id: str | None = None


@dataclass(frozen=True)
class Reply:
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    buttons: tuple[tuple[Button, ...], ...] = ()
    kind: OutboundKind = "reply"


@dataclass(frozen=True)
class Draft:
    """A request to register: the text, what it is about and where."""

    source_message_id: str
    text: str
    classification: Classification
    address: Address | None
    received_at: datetime
    message_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    action: Action
    draft: Draft | None = None
    number: str | None = None
    """The request this step concerns (attach, status, rating, address update)."""
    address: Address | None = None
    """An address to set on ``number`` when it has none yet."""
    remember_address: Address | None = None
    state: State = field(default_factory=State)
    replies: tuple[Reply, ...] = ()
    rating: int | None = None
    comment: str | None = None
    classification: Classification | None = None


def request_number_in(text: str) -> str | None:
    match = NUMBER_RE.search(text or "")
    if not match:
        return None
    return f"{match.group(1)}-{int(match.group(2)):06d}"


def is_greeting_only(text: str) -> bool:
    words = re.findall(r"[a-zа-яё]+", text.lower())
    return bool(words) and all(w in GREETINGS for w in words)


def is_new_problem(classification: Classification, request: RequestView) -> bool:
    """Does a message in an open conversation describe a different problem than its request?"""
    category = classification.category
    if category.value == request.category or category in (Category.OTHER, Category.CONSULTATION):
        return False
    if classification.emergency and not request.emergency:
        return True
    return classification.confidence >= 0.75


def survey_buttons(number: str) -> tuple[tuple[Button, ...], ...]:
    return (tuple(Button(text=str(r), data=f"survey:{number}:{r}") for r in range(1, 6)),)


def status_buttons(number: str) -> tuple[tuple[Button, ...], ...]:
    return ((Button(text="Статус заявки", data=f"status:{number}"),),)


def pressed(data: str) -> str:
    """What a pressed button said, for the thread and the list («Оценка 5 по заявке № …»)."""
    parts = data.split(":")
    if parts[0] == "survey" and len(parts) == 3:
        return f"Оценка {parts[2]} по заявке № {parts[1]}"
    if parts[0] == "status" and len(parts) == 2:
        return f"Статус заявки № {parts[1]}"
    if parts[0] == "slot" and len(parts) == 4:
        return f"Выбрано время визита по заявке № {parts[1]}"
    return "Нажата кнопка"


def _address_of(found: Address | None, remembered: Address | None) -> Address | None:
    if found is not None and found.has_house:
        return found.merged(remembered) if remembered and not found.street else found
    if found is not None and remembered is not None:
        return found.merged(remembered)
    return found or remembered


def plan(s: Situation, extracted: Address | None) -> Step:
    """Decide what to do with one inbound message. Pure: no I/O, no clock but ``s.now``."""
    msg = s.inbound
    if msg.auto_submitted:
        target = s.threaded or s.active
        return Step("store", number=target.number if target and not target.closed else None, state=s.state)
    if msg.kind == "edit":
        return Step("edit", state=s.state)
    if msg.kind == "missed_call":
        return Step("callback_task", state=s.state)
    if msg.kind == "command":
        step = _command(s)
        if step is not None:
            return step
        args = str(msg.payload.get("args") or "").strip()
        msg = msg.model_copy(update={"text": args, "kind": "message"})
        s = replace(s, inbound=msg)
    if msg.kind == "callback":
        return _callback(s)
    return _message(s, extracted)


def _command(s: Situation) -> Step | None:
    command = str(s.inbound.payload.get("command") or "").lower()
    args = str(s.inbound.payload.get("args") or "").strip()
    if command in ("start", "help", "начать"):
        if args:
            return None
        return Step("greet", state=s.state, replies=(Reply("greeting"),))
    if command in ("status", "статус"):
        return _status(s)
    return None


def _own(s: Situation, number: str | None) -> RequestView | None:
    """The looked-up request when it is ``number`` and belongs to the person writing: a button or a command
    naming a request acts only on the resident's own requests, whatever number it carries."""
    target = s.looked_up
    if target is None or number is None or target.number != number:
        return None
    if not target.contact_id or target.contact_id != s.contact_id:
        return None
    return target


def _not_yours(s: Situation, number: str | None) -> Step:
    return Step("store", state=s.state, replies=(Reply("status_not_found", {"number": number}),))


def _status(s: Situation) -> Step:
    wanted = request_number_in(str(s.inbound.payload.get("args") or s.inbound.payload.get("data") or s.inbound.text))
    target = _own(s, wanted or (s.looked_up.number if s.looked_up else None))
    if target is None:
        return Step("status", state=s.state, replies=(Reply("status_not_found", {"number": wanted}),))
    return Step("status", number=target.number, state=s.state, replies=(Reply("status", {"number": target.number}),))


def _callback(s: Situation) -> Step:
    data = str(s.inbound.payload.get("data") or "")
    parts = data.split(":")
    if parts[0] == "survey" and len(parts) == 3 and parts[2].isdigit() and 1 <= int(parts[2]) <= 5:
        number = request_number_in(parts[1])
        if _own(s, number) is None:
            return _not_yours(s, number)
        rating = int(parts[2])
        return Step(
            "rate",
            number=number,
            rating=rating,
            state=State("survey_comment", number=number),
            replies=(Reply("survey_thanks", {"number": number, "rating": rating}),),
        )
    if parts[0] == "status" and len(parts) == 2:
        return _status(s)
    return Step("store", state=s.state)


def _message(s: Situation, extracted: Address | None) -> Step:
    msg = s.inbound
    text = msg.text.strip()
    state = s.state

    if state.awaiting == "survey_comment" and state.number:
        digits = text.strip(" .!")
        if digits.isdigit() and 1 <= int(digits) <= 5:
            return Step(
                "rate",
                number=state.number,
                rating=int(digits),
                state=state,
                replies=(Reply("survey_thanks", {"number": state.number, "rating": int(digits)}),),
            )
        if text and not classify(text).emergency and classify(text).category in (Category.OTHER, Category.CONSULTATION):
            return Step(
                "comment",
                number=state.number,
                comment=text,
                state=State(),
                replies=(Reply("survey_comment_thanks", {"number": state.number}),),
            )
        state = State()

    if not text and not msg.answerable:
        text = VOICE_WITHOUT_TRANSCRIPT
        s = replace(s, inbound=msg.model_copy(update={"text": text}))
    if not text:
        return _without_text(s, state, extracted)

    if state.awaiting == "address" and state.pending:
        return _complete_pending(s, state, extracted)

    if state.awaiting == "description":
        pending_ids = tuple(state.pending.get("message_ids", ()))
        s = replace(s, state=State())
        state = State()
        if pending_ids:
            return _new_request(s, extracted, state, extra_ids=pending_ids)

    if is_greeting_only(text) and s.active is None and msg.answerable:
        return Step("ask", state=State("description"), replies=(Reply("ask_description"),))

    classification = classify(text)
    address = _address_of(extracted, None)

    if state.awaiting == "address_for" and state.number and extracted is not None and extracted.has_house:
        remembered = extracted.merged(s.remembered_address) if not extracted.street else extracted
        target = s.active if s.active and s.active.number == state.number else None
        if target is None or not is_new_problem(classification, target):
            return Step(
                "attach",
                number=state.number,
                address=remembered,
                remember_address=remembered,
                state=State(),
                classification=classification,
                replies=(Reply("address_added", {"number": state.number, "address": remembered.text()}),),
            )

    for request in (s.threaded, s.active):
        if request is None or request.closed:
            continue
        if request is s.threaded or not is_new_problem(classification, request):
            new_address = (
                address
                if address and address.has_house and not (request.address and request.address.has_house)
                else None
            )
            keep = state if state.awaiting == "address_for" and not new_address else State()
            reply = (
                Reply("address_added", {"number": request.number, "address": new_address.text()})
                if new_address
                else Reply("follow_up", {"number": request.number})
            )
            return Step(
                "attach",
                number=request.number,
                address=new_address,
                remember_address=new_address,
                state=keep,
                classification=classification,
                replies=(reply,),
            )

    return _new_request(s, extracted, State())


def _without_text(s: Situation, state: State, extracted: Address | None) -> Step:
    msg = s.inbound
    if msg.payload.get("shared_contact") and not msg.attachments and msg.location is None:
        return Step("store", state=state, replies=(Reply("contact_saved", {"phone": msg.sender.phone}),))
    if state.awaiting == "address" and state.pending and msg.location is not None:
        return _complete_pending(s, state, extracted)
    target = s.active if s.active and not s.active.closed else None
    if target is not None:
        template = "location_added" if msg.location is not None else "attachment_added"
        return Step("attach", number=target.number, state=state, replies=(Reply(template, {"number": target.number}),))
    pending = dict(state.pending) if state.awaiting == "description" else {}
    ids = [*pending.get("message_ids", []), msg.id]
    template = "location_received" if msg.location is not None else "ask_description"
    return Step("ask", state=State("description", pending={"message_ids": ids[-10:]}), replies=(Reply(template),))


def _complete_pending(s: Situation, state: State, extracted: Address | None) -> Step:
    pending = state.pending
    text = "\n".join(t for t in (str(pending.get("text") or ""), s.inbound.text.strip()) if t)
    classification = classify(text)
    address = _address_of(extracted, s.remembered_address)
    if address is not None and not address.has_house and s.inbound.location is None:
        address = address if not address.is_empty else None
    received_at = (
        datetime.fromisoformat(pending["received_at"]) if pending.get("received_at") else s.inbound.received_at
    )
    draft = Draft(
        source_message_id=str(pending.get("message_id") or s.inbound.id),
        text=text,
        classification=classification,
        address=address,
        received_at=received_at,
        message_ids=(str(pending.get("message_id") or s.inbound.id), s.inbound.id),
    )
    return _registration(draft, s, remember=address if address and address.has_house else None)


def _new_request(s: Situation, extracted: Address | None, state: State, extra_ids: tuple[str, ...] = ()) -> Step:
    msg = s.inbound
    classification = classify(msg.text)
    category = info(classification.category)
    address = _address_of(extracted, s.remembered_address)
    draft = Draft(
        source_message_id=msg.id,
        text=msg.text.strip(),
        classification=classification,
        address=address,
        received_at=msg.received_at,
        message_ids=(*extra_ids, msg.id),
    )
    known = address is not None and address.has_house and not s.address_unknown
    has_place = known or msg.location is not None
    if category.emergency or not category.needs_visit or has_place or not msg.answerable:
        remember = extracted.merged(s.remembered_address) if extracted and extracted.has_house and known else None
        return _registration(draft, s, remember=remember)
    pending = {
        "message_id": msg.id,
        "text": msg.text.strip(),
        "received_at": msg.received_at.isoformat(),
        "category": classification.category.value,
    }
    question = (
        Reply("address_unknown", {"address": address.text()}, kind="question")
        if (s.address_unknown and address is not None)
        else Reply("ask_address", {"category": classification.category.value}, kind="question")
    )
    return Step("ask", state=State("address", pending=pending), classification=classification, replies=(question,))


def _registration(draft: Draft, s: Situation, remember: Address | None) -> Step:
    has_house = draft.address is not None and draft.address.has_house
    needs_address = not ((has_house and not s.address_unknown) or s.inbound.location is not None)
    category = info(draft.classification.category)
    ask = needs_address and category.needs_visit and s.inbound.answerable
    state = State("address_for") if ask else State()  # the router fills in the number it assigns
    unknown = draft.address.text() if s.address_unknown and has_house and draft.address is not None else None
    return Step(
        "register",
        draft=draft,
        state=state,
        remember_address=remember,
        classification=draft.classification,
        replies=(Reply("registered", {"ask_address": ask, "unknown_address": unknown}, kind="registration"),),
    )
