"""Train the learned half of the classifier (``adshub classify --train``) and measure it honestly.

The model is fitted on labeled JSON Lines files and on the categories dispatchers set by hand in the
journal. Its figures come from k-fold cross-validation: each message is decided by a model that never
saw it, combined with the rules exactly as in production. The combination's cut-offs are chosen on those
cross-validated decisions, so nothing reported here was tuned on the message it scores. A file whose name
says it is held out is refused: it exists to be measured on, once.

scikit-learn is needed here only; the hub scores with numpy (``domain.learned``).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from adshub.errors import ConfigurationError
from domain.categories import CATEGORIES, Category
from domain.classify import STRONG, Analysis, Classification, Combination, combine, rules_only
from domain.evaluate import Report, load_rows, score
from domain.learned import MODEL_PATH, LinearModel, Prediction, features

REPO = Path(__file__).resolve().parent.parent
TRAINING_SETS = (
    REPO.parent / "shared" / "domain" / "dev-messages.jsonl",
    REPO / "tests" / "data" / "own-messages.jsonl",
    REPO / "tests" / "data" / "own-messages-2.jsonl",
    REPO / "tests" / "data" / "train-residents.jsonl",
    REPO / "tests" / "data" / "calibration-residents.jsonl",
)
CALIBRATION_MARK = "calibration"
"""Sets the rules were never tuned on: the combination's cut-offs are chosen on their out-of-fold decisions,
since on the sets the rules were written from the rules look better than they are."""
HELD_OUT_MARKS = ("heldout", "held-out", "held_out")
MIN_DOCUMENT_FREQUENCY = 2
REGULARISATION = 8.0


Row = dict[str, Any]


def training_rows(paths: Sequence[Path]) -> list[Row]:
    """Labeled rows of every existing file, each text once (the last label wins)."""
    by_text: dict[str, Row] = {}
    for path in paths:
        if any(mark in path.name.lower() for mark in HELD_OUT_MARKS):
            raise ConfigurationError(f"{path.name} is a held-out set: measure on it with --evaluate, never train")
        if not path.is_file():
            continue
        for row in load_rows(path):
            Category(str(row["category"]))
            row["calibration"] = CALIBRATION_MARK in path.name.lower()
            by_text[str(row["text"]).strip()] = row
    return list(by_text.values())


def fit(rows: Sequence[Row], analyses: Sequence[Analysis] | None = None) -> LinearModel:
    """A multinomial logistic regression over the features of ``domain.learned``."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    analyses = analyses if analyses is not None else [Analysis(str(r["text"])) for r in rows]
    found = [features(a) for a in analyses]
    frequency: dict[str, int] = defaultdict(int)
    for names in found:
        for name in names:
            frequency[name] += 1
    vocabulary = {
        name: i for i, name in enumerate(sorted(n for n, f in frequency.items() if f >= MIN_DOCUMENT_FREQUENCY))
    }
    indptr, indices, data = [0], [], []
    for names in found:
        columns = sorted({vocabulary[n] for n in names if n in vocabulary})
        indices.extend(columns)
        data.extend([1.0 / np.sqrt(len(columns))] * len(columns) if columns else [])
        indptr.append(len(indices))
    matrix = csr_matrix((data, indices, indptr), shape=(len(found), len(vocabulary)))
    labels = [str(r["category"]) for r in rows]
    if len(set(labels)) < 2:
        raise ConfigurationError("training needs messages of at least two categories")
    regression = LogisticRegression(C=REGULARISATION, max_iter=3000, class_weight="balanced")
    regression.fit(matrix, labels)
    weights = regression.coef_.T
    intercepts = regression.intercept_
    if weights.shape[1] == 1:
        weights = np.hstack([-weights / 2, weights / 2])
        intercepts = np.array([-intercepts[0] / 2, intercepts[0] / 2])
    return LinearModel(vocabulary, weights, intercepts, [str(c) for c in regression.classes_])


@dataclass(frozen=True)
class Opinion:
    """One message decided out of fold: what the rules said and what a model that never saw it said."""

    row: Row
    rules: Classification
    analysis: Analysis
    prediction: Prediction


def folds_of(rows: Sequence[Row], folds: int, seed: int) -> list[int]:
    """A fold per row, each category spread evenly over the folds."""
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_category[str(row["category"])].append(i)
    shuffle = random.Random(seed)
    fold = [0] * len(rows)
    offset = 0
    for _, members in sorted(by_category.items()):
        shuffle.shuffle(members)
        for j, i in enumerate(members):
            fold[i] = (offset + j) % folds
        offset += len(members)
    return fold


def cross_validated(rows: Sequence[Row], folds: int = 5, seed: int = 13) -> list[Opinion]:
    decided = [rules_only(str(r["text"])) for r in rows]
    fold = folds_of(rows, folds, seed)
    opinions: list[Opinion | None] = [None] * len(rows)
    for k in range(folds):
        inside = [i for i in range(len(rows)) if fold[i] != k]
        model = fit([rows[i] for i in inside], [decided[i][1] for i in inside])
        for i in range(len(rows)):
            if fold[i] == k:
                rules, analysis = decided[i]
                opinions[i] = Opinion(rows[i], rules, analysis, model.predict(analysis))
    return [o for o in opinions if o is not None]


def decide(opinion: Opinion, combination: Combination) -> Classification:
    chosen, by, confidence = combine(opinion.rules, opinion.prediction, combination, opinion.analysis)
    return Classification(chosen, CATEGORIES[chosen].emergency, confidence, decided_by=by)


def report_of(opinions: Iterable[Opinion], combination: Combination | None) -> Report:
    """Figures of the rules alone (``combination`` None), or of rules and model together."""
    if combination is None:
        return score((o.row, o.rules) for o in opinions)
    return score((o.row, decide(o, combination)) for o in opinions)


def model_alone(opinions: Iterable[Opinion]) -> Report:
    pairs = []
    for o in opinions:
        best, p = o.prediction.best
        pairs.append((o.row, Classification(best, CATEGORIES[best].emergency, p, decided_by="model")))
    return score(pairs)


def choose_combination(opinions: Sequence[Opinion]) -> Combination:
    """The cut-offs that miss fewest emergencies, then raise fewest false alarms, then get most categories
    right — on out-of-fold decisions only."""
    best: tuple[Any, ...] | None = None
    chosen = Combination()
    grid = product(
        [x / 100 for x in range(25, 80, 5)],
        [x / 100 for x in range(40, 95, 5)],
        [1.5, 2.0, 2.5, STRONG, 4.0],
    )
    for emergency, category, weak in grid:
        combination = Combination(emergency=emergency, category=category, weak=weak)
        report = report_of(opinions, combination)
        recall_floor = report.emergency_recall >= 0.97 and report.emergency_precision >= 0.85
        key = (
            recall_floor,
            round(report.emergency_recall, 3),
            round(report.category_accuracy + report.emergency_precision, 3),
            -abs(emergency - 0.5),
        )
        if best is None or key > best:
            best, chosen = key, combination
    return chosen


@dataclass(frozen=True)
class Training:
    messages: int
    combination: Combination
    reports: dict[str, tuple[Report, Report, Report]]
    """Per scope (all messages, calibration sets): rules alone, model alone, rules and model together."""
    calibration: int
    features: int
    path: Path


def train(rows: Sequence[Row], output: Path = MODEL_PATH, folds: int = 5) -> Training:
    """Cross-validate, choose the cut-offs, then fit on everything and save the model."""
    if len(rows) < folds * 2:
        raise ConfigurationError(f"training needs at least {folds * 2} labeled messages, got {len(rows)}")
    opinions = cross_validated(rows, folds)
    calibration = [o for o in opinions if o.row.get("calibration")]
    chosen_on = calibration if len(calibration) >= 50 else opinions
    combination = choose_combination(chosen_on)
    model = fit(rows)
    model.thresholds = {
        "emergency": combination.emergency,
        "category": combination.category,
        "weak": combination.weak,
    }
    model.save(output)
    return Training(
        messages=len(rows),
        combination=combination,
        reports={
            "all": (report_of(opinions, None), model_alone(opinions), report_of(opinions, combination)),
            "calibration": (report_of(chosen_on, None), model_alone(chosen_on), report_of(chosen_on, combination)),
        },
        calibration=len(chosen_on) if chosen_on is calibration else 0,
        features=len(model.vocabulary),
        path=output,
    )


def describe(training: Training) -> str:
    c = training.combination
    where = f"the {training.calibration} calibration messages" if training.calibration else "all messages"
    lines = [
        f"trained on {training.messages} messages, {training.features} features → {training.path}",
        f"cut-offs (chosen on {where}, out of fold): emergency ≥ {c.emergency:.2f}, "
        f"category ≥ {c.category:.2f} when rule evidence < {c.weak:.1f}",
    ]
    scopes = [("all", f"all {training.messages} messages")]
    if training.calibration:
        scopes.append(("calibration", f"the {training.calibration} calibration messages (rules never tuned on them)"))
    for scope, title in scopes:
        lines.append("")
        lines.append(f"5-fold cross-validation on {title}; each decided by a model that never saw it:")
        for name, report in zip(("rules alone", "model alone", "rules + model"), training.reports[scope], strict=True):
            s = report.summary()
            lines.append(
                f"  {name:<14} accuracy {s['category_accuracy']:.4f}  recall {s['emergency_recall']:.4f}  "
                f"precision {s['emergency_precision']:.4f}  missed {s['missed_emergencies']}  "
                f"false alarms {s['false_alarms']}"
            )
    lines.append("")
    lines.append("rules + model on all messages, per category:")
    lines.append(training.reports["all"][2].table())
    return "\n".join(lines)
