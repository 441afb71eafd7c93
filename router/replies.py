"""Rendering the dialogue's replies for the resident's channel, with a deterministic id per reply."""

from __future__ import annotations

from datetime import datetime

from adshub.contract import Outbound
from bots.dialogue import Reply, status_buttons
from bots.texts import Texts
from domain.threading import reply_subject, reply_thread
from router.situation import Work


def render_reply(
    w: Work,
    reply: Reply,
    index: int,
    number: str | None,
    now: datetime,
    texts: Texts,
    to: tuple[str, str] | None = None,
) -> Outbound:
    """One reply to ``w``'s message; ``<inbound id>#reply``, ``#reply2``… so a redelivery sends the same ones.
    ``to``: a channel and address other than the message's own (an SMS to a caller), plain text only."""
    inbound = w.inbound
    channel, address = to or (inbound.channel, inbound.address)
    context = dict(reply.context)
    deadline = None
    request = w.request if w.request is not None and reply.template == "registered" else None
    template = reply.template
    if request is not None:
        context = {**texts.request_context(request), **context}
        deadline = request.get("deadline")
        if w.incident is not None:
            template = "incident_joined"
            context["master"] = w.incident["master"]
    elif reply.template == "status" and w.looked_up is not None:
        context = {**context, **texts.request_context(w.looked_up)}
    text = texts.render(template, channel, **context)
    buttons = reply.buttons
    if request is not None and not buttons:
        buttons = status_buttons(request["_id"])
    if to is not None:
        buttons = ()
    suffix = "reply" if index == 0 else f"reply{index + 1}"
    return Outbound(
        id=f"{inbound.id}#{suffix}",
        channel=channel,
        address=address,
        text=text,
        kind=reply.kind,
        buttons=[list(row) for row in buttons],
        conversation_id=w.conversation["_id"],
        request_number=number,
        deadline=deadline,
        in_reply_to=inbound.id,
        subject=reply_subject(inbound.subject, number) if to is None else None,
        thread=reply_thread(inbound) if to is None else [],
        author="hub",
        created_at=now,
    )
