"""What every phone source makes: a voicemail (its transcript is the text) or a missed call, and the
small readers of the numbers and times phone systems send."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from adshub.contract import Inbound

CHANNEL = "voicemail"


def as_int(value: Any, default: int = 0) -> int:
    """An integer from a value a PBX sends as a number or a string; ``default`` when it is neither."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def moment(*values: Any) -> datetime:
    """The first plausible unix timestamp among ``values`` (seconds or milliseconds), else now."""
    for value in values:
        number = as_int(value)
        if number > 10**11:
            number //= 1000
        if 946684800 <= number <= 4102444800:
            return datetime.fromtimestamp(number, UTC)
    return datetime.now(UTC)


def transcript_edit(original: Inbound, transcript: str) -> Inbound:
    """A transcript that arrived after the voicemail was taken in."""
    digest = hashlib.sha256(transcript.encode()).hexdigest()[:12]
    return Inbound(
        id=f"{original.id}:transcript:{digest}",
        channel=original.channel,
        address=original.address,
        sender=original.sender,
        kind="edit",
        text=transcript,
        received_at=datetime.now(UTC),
        edit_of=original.id,
        answerable=False,
        payload={"source": original.payload.get("source"), "transcript": True},
    )
