"""The manager's reports, computed from the requests and callbacks of a period."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from journal.documents import BookingDoc, RequestDoc, TaskDoc


@dataclass
class ExecutorFigures:
    jobs: int = 0
    done: int = 0
    with_photo: int = 0
    to_arrival: list[float] = field(default_factory=list)
    to_completion: list[float] = field(default_factory=list)

    @property
    def arrival_median(self) -> float | None:
        return statistics.median(self.to_arrival) if self.to_arrival else None

    @property
    def completion_median(self) -> float | None:
        return statistics.median(self.to_completion) if self.to_completion else None


@dataclass
class Report:
    total: int = 0
    by_channel: Counter[str] = field(default_factory=Counter)
    by_category: Counter[str] = field(default_factory=Counter)
    by_day: Counter[str] = field(default_factory=Counter)
    clocks: dict[str, dict[str, int]] = field(default_factory=dict)
    medians: dict[str, float | None] = field(default_factory=dict)
    callbacks: dict[str, int] = field(default_factory=dict)
    executors: dict[str, ExecutorFigures] = field(default_factory=dict)
    """By executor's name: what the crew app and the bookings say about their work."""
    load: dict[str, dict[str, float]] = field(default_factory=dict)
    """Hours booked, by executor's name and local day."""
    closed: int = 0
    closed_with_photo: int = 0
    paid_total: float = 0.0

    def share_met(self, clock: str) -> float | None:
        counts = self.clocks.get(clock) or {}
        decided = counts.get("met", 0) + counts.get("missed", 0)
        return counts.get("met", 0) / decided if decided else None


def _minutes(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds() / 60


def build_report(
    requests: list[RequestDoc], tasks: list[TaskDoc], tz: ZoneInfo, bookings: Sequence[BookingDoc] = ()
) -> Report:
    report = Report()
    for b in bookings:
        day = b["start"].astimezone(tz).strftime("%Y-%m-%d")
        hours = (b["end"] - b["start"]).total_seconds() / 3600
        days = report.load.setdefault(b.get("staff_name") or "?", {})
        days[day] = days.get(day, 0.0) + hours
    waits: dict[str, list[float]] = {"inform": [], "localize": [], "close": []}
    for doc in requests:
        report.total += 1
        report.by_channel[doc.get("channel", "?")] += 1
        report.by_category[doc.get("category", "?")] += 1
        report.by_day[doc["registered_at"].astimezone(tz).strftime("%Y-%m-%d")] += 1
        for name, clock in (doc.get("clocks") or {}).items():
            counts = report.clocks.setdefault(name, {"met": 0, "missed": 0, "open": 0})
            if clock.get("met") is True:
                counts["met"] += 1
            elif clock.get("met") is False:
                counts["missed"] += 1
            else:
                counts["open"] += 1
        clocks = doc.get("clocks") or {}
        for name in ("inform", "localize"):
            minutes = _minutes((clocks.get(name) or {}).get("done_at"), doc["registered_at"])
            if minutes is not None:
                waits[name].append(minutes)
        if doc.get("status") == "done":
            minutes = _minutes(doc.get("closed_at"), doc["registered_at"])
            if minutes is not None:
                waits["close"].append(minutes)
            report.closed += 1
            report.closed_with_photo += 1 if (doc.get("result") or {}).get("photos") else 0
            report.paid_total += float((doc.get("paid") or {}).get("total") or 0)
        executor = doc.get("executor") or {}
        if executor.get("name"):
            figures = report.executors.setdefault(executor["name"], ExecutorFigures())
            figures.jobs += 1
            assigned = executor.get("assigned_at")
            arrived = _minutes((doc.get("crew") or {}).get("on_site"), assigned)
            if arrived is not None:
                figures.to_arrival.append(arrived)
            if doc.get("status") == "done":
                figures.done += 1
                figures.with_photo += 1 if (doc.get("result") or {}).get("photos") else 0
                completed = _minutes(doc.get("closed_at"), assigned)
                if completed is not None:
                    figures.to_completion.append(completed)
    report.medians = {k: (statistics.median(v) if v else None) for k, v in waits.items()}
    report.callbacks = {
        "total": len(tasks),
        "met": sum(1 for t in tasks if t.get("met") is True),
        "missed": sum(1 for t in tasks if t.get("met") is False),
        "open": sum(1 for t in tasks if t.get("status") == "open"),
    }
    return report
