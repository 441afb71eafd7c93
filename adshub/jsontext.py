"""JSON from outside the hub, read defensively: bodies of webhooks, chat frames, button payloads.

Malformed JSON, bytes that are not UTF-8 and structures nested deeper than any
API the hub talks to (``MAX_DEPTH``) are ``InvalidInput`` — refused with a 400,
never a RecursionError deep in a parser or a serializer.
"""

from __future__ import annotations

import json
import re
from typing import Any

from adshub.errors import InvalidInput

MAX_DEPTH = 32
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[^\[\]{}]+")


def depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (strings do not count)."""
    deepest = level = 0
    for char in _BRACKETS.sub("", _STRINGS.sub("", text)):
        if char in "[{":
            level += 1
            deepest = max(deepest, level)
        else:
            level -= 1
    return deepest


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from outside; raises InvalidInput with a short reason."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the body is not UTF-8") from None
    else:
        text = data
    if depth(text) > max_depth:
        raise InvalidInput(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"not JSON: {str(exc)[:100]}") from None
