"""The state of a request's regulatory clocks: when to look again, what to warn about, what is met.

A clock is a mapping with ``due_at`` and, once decided, ``done_at``/``met``
(the journal's ``ClockDoc``); ``warned_at`` and ``breached_at`` record the alerts.
Pure: the clock watcher and the inbox use these to decide, the journal writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

KEPT_ON_RECOMPUTE = ("done_at", "met", "by", "warned_at", "breached_at")
"""What a clock keeps when its request's category changes and the clocks are computed again."""


@dataclass(frozen=True)
class Alert:
    clock: str
    kind: str
    """``warning`` before the due time, ``breach`` once it has passed."""
    due_at: datetime


def next_due(clocks: Mapping[str, Mapping[str, Any]] | None, warn_before: timedelta = timedelta(0)) -> datetime | None:
    """When the clock watcher must look at a request again (it looks ``warn_before`` ahead).

    A clock already warned about is next looked at when it runs out; a breached
    or met clock needs no more looks.
    """
    times = []
    for clock in (clocks or {}).values():
        if clock.get("done_at") is not None or clock.get("breached_at") is not None or not clock.get("due_at"):
            continue
        times.append(clock["due_at"] + (warn_before if clock.get("warned_at") else timedelta(0)))
    return min(times) if times else None


def clock_alerts(clocks: Mapping[str, Mapping[str, Any]], now: datetime, warn_before: timedelta) -> list[Alert]:
    """Which clocks need a warning now and which have just been breached."""
    alerts: list[Alert] = []
    for name, clock in clocks.items():
        due = clock.get("due_at")
        if due is None or clock.get("done_at") is not None:
            continue
        if now >= due and clock.get("breached_at") is None:
            alerts.append(Alert(name, "breach", due))
        elif due - warn_before <= now < due and clock.get("warned_at") is None:
            alerts.append(Alert(name, "warning", due))
    return alerts


def completed(clock: Mapping[str, Any], at: datetime, by: str) -> dict[str, Any]:
    """The clock, done at ``at`` by ``by``: met when that is not after it was due."""
    return {**clock, "done_at": at, "by": by, "met": at <= clock["due_at"]}


def carried_over(
    new: Mapping[str, Mapping[str, Any]],
    old: Mapping[str, Mapping[str, Any]],
    keep: tuple[str, ...] = KEPT_ON_RECOMPUTE,
    decided_only: bool = False,
) -> dict[str, dict[str, Any]]:
    """Recomputed clocks keep what was recorded on the clocks of the same name (only on met or missed
    ones with ``decided_only``)."""
    result = {name: dict(clock) for name, clock in new.items()}
    for name, previous in old.items():
        if name not in result or (decided_only and previous.get("done_at") is None):
            continue
        result[name].update({k: previous.get(k) for k in keep})
    return result
