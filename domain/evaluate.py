"""Score the classifier on labeled messages (``text``, ``category``, ``emergency``): overall and per category."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from domain.categories import CATEGORIES, Category
from domain.classify import Classification, classify


@dataclass(frozen=True)
class CategoryFigures:
    category: str
    support: int
    recall: float
    precision: float


@dataclass(frozen=True)
class Report:
    total: int
    category_accuracy: float
    emergency_recall: float
    emergency_precision: float
    errors: list[dict[str, object]]
    confusion: Counter[tuple[str, str]]
    per_category: list[CategoryFigures] = field(default_factory=list)
    missed_emergencies: int = 0
    false_alarms: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "messages": self.total,
            "category_accuracy": round(self.category_accuracy, 4),
            "emergency_recall": round(self.emergency_recall, 4),
            "emergency_precision": round(self.emergency_precision, 4),
            "missed_emergencies": self.missed_emergencies,
            "false_alarms": self.false_alarms,
        }

    def table(self) -> str:
        """Per-category recall and precision and the commonest confusions, for a person to read."""
        lines = [f"{'category':<22} {'n':>4} {'recall':>7} {'precision':>9}"]
        for f in self.per_category:
            lines.append(f"{f.category:<22} {f.support:>4} {f.recall:>7.3f} {f.precision:>9.3f}")
        if self.confusion:
            lines.append("")
            lines.append("commonest confusions (expected → got):")
            for (expected, got), n in self.confusion.most_common(10):
                lines.append(f"  {n:>3} × {expected} → {got}")
        return "\n".join(lines)


def score(pairs: Iterable[tuple[dict[str, object], Classification]]) -> Report:
    """The figures of decisions already made, each paired with its labeled row."""
    correct = tp = fp = fn = 0
    errors: list[dict[str, object]] = []
    confusion: Counter[tuple[str, str]] = Counter()
    expected_count: Counter[str] = Counter()
    got_count: Counter[str] = Counter()
    hit_count: Counter[str] = Counter()
    total = 0
    for row, result in pairs:
        total += 1
        expected = str(row["category"])
        got = result.category.value
        expected_count[expected] += 1
        got_count[got] += 1
        if got == expected:
            correct += 1
            hit_count[expected] += 1
        else:
            confusion[(expected, got)] += 1
            errors.append(
                {
                    "text": row["text"],
                    "expected": expected,
                    "got": got,
                    "decided_by": result.decided_by,
                    "scores": result.scores,
                }
            )
        expected_emergency = bool(row["emergency"])
        if result.emergency and expected_emergency:
            tp += 1
        elif result.emergency:
            fp += 1
        elif expected_emergency:
            fn += 1
    per_category = [
        CategoryFigures(
            category=c.value,
            support=expected_count[c.value],
            recall=hit_count[c.value] / expected_count[c.value] if expected_count[c.value] else 1.0,
            precision=hit_count[c.value] / got_count[c.value] if got_count[c.value] else 1.0,
        )
        for c in Category
        if expected_count[c.value] or got_count[c.value]
    ]
    return Report(
        total=total,
        category_accuracy=correct / total if total else 0.0,
        emergency_recall=tp / (tp + fn) if tp + fn else 1.0,
        emergency_precision=tp / (tp + fp) if tp + fp else 1.0,
        errors=errors,
        confusion=confusion,
        per_category=per_category,
        missed_emergencies=fn,
        false_alarms=fp,
    )


def evaluate(rows: list[dict[str, object]], decide: Callable[[str], Classification] = classify) -> Report:
    return score((row, decide(str(row["text"]))) for row in rows)


def load_rows(path: Path) -> list[dict[str, object]]:
    """Labeled rows of a JSON Lines file; a row's emergency flag defaults to its category's."""
    rows: list[dict[str, object]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            row.setdefault("emergency", CATEGORIES[Category(row["category"])].emergency)
            rows.append(row)
    return rows
