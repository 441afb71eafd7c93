"""How a reply joins the resident's thread on channels that have threads (mail): pure."""

from __future__ import annotations

import re

from adshub.contract import Inbound


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
    """The references of a reply to ``inbound``: its thread and the message itself, the last 20."""
    refs = [*inbound.thread]
    if inbound.external_ref and inbound.external_ref not in refs:
        refs.append(inbound.external_ref)
    return refs[-20:]
