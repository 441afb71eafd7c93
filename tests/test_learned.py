"""The learned half of the classifier: trained by a command, scored like it was trained, combined with the
rules recall first without overruling their reading of negation and tense, explained in the message's words."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adshub.errors import ConfigurationError
from app.train import cross_validated, fit, folds_of, training_rows
from domain.categories import Category
from domain.classify import Analysis, Combination, classify, classify_with, rules_only
from domain.evaluate import evaluate, load_rows
from domain.learned import MODEL_PATH, LinearModel, default_model, features
from tests.helpers import REPO

DATA = REPO / "tests" / "data"


@pytest.fixture(scope="module")
def small_model() -> LinearModel:
    return fit(training_rows([DATA / "own-messages.jsonl", DATA / "train-residents.jsonl"]))


def test_scoring_sees_exactly_the_features_training_saw(small_model: LinearModel) -> None:
    """The hub scores with per-word caches; the probabilities must be those of the training representation."""
    for text in ("тичот батарея в комноте, вода на полу!", "нет горячей воды?", "zastryali v lifte", "12 34"):
        analysis = Analysis(text)
        rows = sorted({small_model.vocabulary[n] for n in features(analysis) if n in small_model.vocabulary})
        logits = small_model.intercepts.astype(np.float64).copy()
        if rows:
            logits += small_model.weights[rows].sum(axis=0) / math.sqrt(len(rows))
        expected = np.exp(logits - logits.max())
        expected /= expected.sum()
        got = small_model.predict(analysis).probabilities
        assert [round(got[c], 5) for c in small_model.classes] == [round(float(p), 5) for p in expected], text


def test_a_saved_model_loads_with_its_cut_offs(small_model: LinearModel, tmp_path: Path) -> None:
    small_model.thresholds = {"emergency": 0.4, "category": 0.6, "weak": 2.0}
    small_model.save(tmp_path / "m.npz")
    loaded = LinearModel.load(tmp_path / "m.npz")
    assert Combination.of(loaded) == Combination(emergency=0.4, category=0.6, weak=2.0)
    text = "вонь из подвала, стоят нечистоты"
    assert loaded.predict(Analysis(text)).best[0] == small_model.predict(Analysis(text)).best[0]


def test_held_out_sets_are_never_trained_on() -> None:
    with pytest.raises(ConfigurationError, match="held-out"):
        training_rows([DATA / "train-residents.jsonl", DATA / "heldout-residents.jsonl"])


def test_folds_spread_every_category_and_no_message_is_scored_by_a_model_that_saw_it() -> None:
    rows = training_rows([DATA / "own-messages.jsonl", DATA / "own-messages-2.jsonl"])
    fold = folds_of(rows, 5, seed=1)
    for category in {r["category"] for r in rows}:
        members = [fold[i] for i, r in enumerate(rows) if r["category"] == category]
        assert max(members.count(k) for k in range(5)) - min(members.count(k) for k in range(5)) <= 1
    opinions = cross_validated(rows, folds=5)
    assert [o.row["text"] for o in opinions] == [r["text"] for r in rows]


def test_the_shipped_model_is_in_the_package_and_decides_with_the_rules() -> None:
    assert MODEL_PATH.is_file(), "domain/model/classifier.npz is built by `make model` and committed"
    model = default_model()
    assert model is not None and set(model.classes) == set(Category)
    agreed = classify("прорвало трубу, хлещет кипяток")
    assert agreed.decided_by == "rules+model" and agreed.emergency


def test_an_emergency_the_model_finds_is_an_emergency_and_named_by_the_message_words() -> None:
    """Where the rules see nothing urgent but the model does, recall wins: the model decides, and the
    explanation is made of the resident's own words, never codes or scores."""
    model = default_model()
    assert model is not None
    text = "Вода с потолка! Срочно!!! 🆘🆘🆘"
    assert not rules_only(text)[0].emergency
    result = classify_with(text, model)
    assert result.emergency and result.decided_by == "model"
    assert result.phrases and all(p.lower() in text.lower() for p in result.phrases)
    strict = classify_with(text, model, Combination(emergency=1.01, category=1.01))
    assert strict.decided_by != "model" and not strict.emergency


def test_the_model_does_not_overrule_negation_or_the_past() -> None:
    model = default_model()
    assert model is not None
    for text in ("газом не пахнет, но плита не зажигается", "вчера прорвало трубу, сегодня уже всё починили"):
        loose = classify_with(text, model, Combination(emergency=0.05, category=0.05, weak=99))
        assert not loose.emergency, text


def test_training_command_reports_cross_validation_and_writes_a_model(tmp_path: Path) -> None:
    output = tmp_path / "model.npz"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "classify",
            "--train",
            str(DATA / "own-messages.jsonl"),
            str(DATA / "train-residents.jsonl"),
            str(DATA / "calibration-residents.jsonl"),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert "5-fold cross-validation" in done.stdout and "calibration" in done.stdout
    assert "elevator_trapped" in done.stdout
    model = LinearModel.load(output)
    assert set(model.thresholds) == {"emergency", "category", "weak"}
    report = evaluate(load_rows(DATA / "own-messages-2.jsonl"), lambda text: classify_with(text, model))
    assert report.emergency_recall >= 0.95


def test_explain_shows_the_rules_and_the_model_behind_a_decision() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "classify", "--explain"],
        input=json.dumps({"text": "памагите тичот батарея в комноте вода на полу"}, ensure_ascii=False) + "\n",
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    row = json.loads(done.stdout)
    assert row["category"] == "heating_accident" and row["emergency"] is True
    explained = row["explanation"]
    assert explained["rules"]["scores"]["heating_accident"] > 0
    first = explained["model"][0]
    assert first["category"] == "heating_accident" and 0 < first["probability"] <= 1
    assert "батарея" in first["words"]


def test_evaluate_prints_per_category_figures_and_confusions(tmp_path: Path) -> None:
    labeled = tmp_path / "set.jsonl"
    labeled.write_text(
        "\n".join(
            json.dumps(row, ensure_ascii=False)
            for row in (
                {"text": "в лифте застрял ребенок", "category": "elevator_trapped"},
                {"text": "лифт не работает", "category": "elevator_trapped"},
                {"text": "нет горячей воды", "category": "utility_outage", "emergency": True},
            )
        ),
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "app", "classify", "--evaluate", str(labeled)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    summary = json.loads(done.stdout)
    assert summary["messages"] == 3 and summary["missed_emergencies"] == 1
    assert "elevator_trapped" in done.stderr and "elevator_trapped → elevator_fault" in done.stderr
