"""Score the classifier on a labeled JSON Lines file (``text``, ``category``, ``emergency``)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from domain.classify import classify


@dataclass(frozen=True)
class Report:
    total: int
    category_accuracy: float
    emergency_recall: float
    emergency_precision: float
    errors: list[dict[str, object]]
    confusion: Counter[tuple[str, str]]

    def summary(self) -> dict[str, object]:
        return {
            "messages": self.total,
            "category_accuracy": round(self.category_accuracy, 4),
            "emergency_recall": round(self.emergency_recall, 4),
            "emergency_precision": round(self.emergency_precision, 4),
        }


def evaluate(rows: list[dict[str, object]]) -> Report:
    correct = tp = fp = fn = 0
    errors: list[dict[str, object]] = []
    confusion: Counter[tuple[str, str]] = Counter()
    for row in rows:
        result = classify(str(row["text"]))
        expected = str(row["category"])
        expected_emergency = bool(row["emergency"])
        if result.category.value == expected:
            correct += 1
        else:
            confusion[(expected, result.category.value)] += 1
            errors.append(
                {"text": row["text"], "expected": expected, "got": result.category.value, "scores": result.scores}
            )
        if result.emergency and expected_emergency:
            tp += 1
        elif result.emergency:
            fp += 1
        elif expected_emergency:
            fn += 1
    total = len(rows)
    return Report(
        total=total,
        category_accuracy=correct / total if total else 0.0,
        emergency_recall=tp / (tp + fn) if tp + fn else 1.0,
        emergency_precision=tp / (tp + fp) if tp + fp else 1.0,
        errors=errors,
        confusion=confusion,
    )


def load_rows(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
