"""The learned half of the classifier: a linear model over what a message says and how it is spelled.

Features come from the same analysis the rules use (``domain.classify.Analysis``):
lemmas and lemma pairs, the lexicon's concepts (marked when negated, past or
hypothetical), and character n-grams of each word's sound key, so that a
misspelled or transliterated word still looks like itself. The model is a
multinomial logistic regression trained offline (``adshub classify --train``,
scikit-learn) on the labeled sets and the dispatchers' corrections, and stored
small: its vocabulary and one weight row per feature (``model/classifier.npz``).
Scoring needs only numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from domain.categories import Category
from domain.normalize import sound_key

if TYPE_CHECKING:
    from domain.classify import Analysis

MODEL_PATH = Path(__file__).resolve().parent / "model" / "classifier.npz"
NGRAMS = (3, 4)
WORD_CACHE = 200_000


def word_features(text: str, lemma: str) -> list[str]:
    """What one word contributes wherever it stands: its lemma and the n-grams of its sound key."""
    found = [f"w:{lemma}"]
    if len(text) >= 3:
        key = f" {sound_key(text)} "
        for n in NGRAMS:
            found.extend(f"c:{key[i : i + n]}" for i in range(len(key) - n + 1))
    return found


def message_features(a: Analysis) -> list[tuple[str, int]]:
    """What depends on the words' company: lemma pairs, concepts marked by negation and tense, punctuation."""
    found: list[tuple[str, int]] = []
    kept = [w for w in a.words if not w.text.isdigit()]
    found.extend((f"b:{x.lemma}_{y.lemma}", y.index) for x, y in pairwise(kept))
    for concept, positions in a.hits.items():
        for i in positions:
            if i in a.negated:
                mark = "n"
            elif a.words[i].segment in a.historic:
                mark = "h"
            elif i in a.hypothetical:
                mark = "q"
            else:
                mark = "a"
            found.append((f"k{mark}:{concept}", i))
    if a.question:
        found.append(("s:question", -1))
    if "!" in a.text:
        found.append(("s:exclaim", -1))
    return found


def features(a: Analysis) -> dict[str, int]:
    """The features of one analysed message, each once, with the word each came from (-1: the whole message)."""
    found: dict[str, int] = {}
    for w in a.words:
        if not w.text.isdigit():
            for name in word_features(w.text, w.lemma):
                found.setdefault(name, w.index)
    for name, index in message_features(a):
        found.setdefault(name, index)
    return found


class Prediction:
    """The model's view of one message: a probability per category, and on request the words behind one
    (``contributions``: each present feature's weights, scaled as in the sum)."""

    def __init__(
        self,
        probabilities: dict[Category, float],
        words: Sequence[str] = (),
        sources: Sequence[int] = (),
        relative: np.ndarray | None = None,
        classes: Sequence[Category] = (),
    ) -> None:
        self.probabilities = probabilities
        self._words = words
        self._sources = sources
        self._relative = relative
        self._classes = list(classes)

    @property
    def best(self) -> tuple[Category, float]:
        return max(self.probabilities.items(), key=lambda item: item[1])

    def emergency_probability(self, emergency: Iterable[Category]) -> float:
        wanted = set(emergency)
        return sum(p for c, p in self.probabilities.items() if c in wanted)

    def weighed(self, category: Category) -> tuple[tuple[str, float], ...]:
        """The message's words that spoke for ``category``, each with its weight above the average category."""
        return tuple((self._words[i], v) for i, v in self.evidence(category))

    def evidence(self, category: Category) -> tuple[tuple[int, float], ...]:
        """Positions of the words that spoke for ``category``, the weightiest first."""
        if self._relative is None or category not in self._classes:
            return ()
        block = self._relative
        column = block[:, self._classes.index(category)] - block.mean(axis=1)
        by_word: dict[int, float] = {}
        for index, value in zip(self._sources, column, strict=True):
            if index >= 0:
                by_word[index] = by_word.get(index, 0.0) + float(value)
        ranked = sorted(by_word.items(), key=lambda item: -item[1])
        return tuple((i, round(v, 3)) for i, v in ranked if v > 0)

    def words_for(self, category: Category, limit: int = 4) -> tuple[str, ...]:
        """The message's words that spoke most for ``category`` (short function words left out)."""
        return tuple(word for word, _ in self.weighed(category) if len(word) > 2)[:limit]


class LinearModel:
    """A trained multinomial logistic regression over binary, L2-normalised features.

    ``thresholds`` are the combination's cut-offs chosen with the model (see ``domain.classify.Combination``)."""

    def __init__(
        self,
        vocabulary: dict[str, int],
        weights: np.ndarray,
        intercepts: np.ndarray,
        classes: list[str],
        thresholds: dict[str, float] | None = None,
    ):
        self.vocabulary = vocabulary
        self.weights = weights.astype(np.float32)
        self.intercepts = intercepts.astype(np.float32)
        self.classes = [Category(c) for c in classes]
        self.thresholds = dict(thresholds or {})
        self._words: dict[str, tuple[int, ...]] = {}

    def predict(self, a: Analysis) -> Prediction:
        """Probabilities for one analysed message."""
        present: dict[int, int] = {}
        for w in a.words:
            if not w.text.isdigit():
                for row in self._word_rows(w.text, w.lemma):
                    present.setdefault(row, w.index)
        vocabulary = self.vocabulary
        for name, index in message_features(a):
            found = vocabulary.get(name)
            if found is not None:
                present.setdefault(found, index)
        if not present:
            return Prediction(self._softmax(self.intercepts.copy()))
        rows = list(present)
        scale = 1.0 / math.sqrt(len(rows))
        block = self.weights[rows]
        logits = block.sum(axis=0) * scale + self.intercepts
        return Prediction(
            self._softmax(logits), [w.text for w in a.words], list(present.values()), block * scale, self.classes
        )

    def _word_rows(self, text: str, lemma: str) -> tuple[int, ...]:
        """The vocabulary rows of one word, remembered: most words of a message have been seen before."""
        rows = self._words.get(text)
        if rows is None:
            if len(self._words) > WORD_CACHE:
                self._words.clear()
            vocabulary = self.vocabulary
            rows = tuple(vocabulary[n] for n in word_features(text, lemma) if n in vocabulary)
            self._words[text] = rows
        return rows

    def _softmax(self, logits: np.ndarray) -> dict[Category, float]:
        exp = np.exp(logits - logits.max())
        probabilities = exp / exp.sum()
        return {c: float(p) for c, p in zip(self.classes, probabilities, strict=True)}

    def save(self, path: Path) -> None:
        names = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            vocabulary=np.array(names),
            weights=self.weights.astype(np.float16),
            intercepts=self.intercepts,
            classes=np.array([c.value for c in self.classes]),
            threshold_names=np.array(sorted(self.thresholds)),
            threshold_values=np.array([self.thresholds[k] for k in sorted(self.thresholds)], dtype=np.float64),
        )

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["vocabulary"]]
            thresholds = dict(
                zip(
                    (str(n) for n in data["threshold_names"]),
                    (float(v) for v in data["threshold_values"]),
                    strict=True,
                )
            )
            return cls(
                {n: i for i, n in enumerate(names)},
                data["weights"].astype(np.float32),
                data["intercepts"],
                [str(c) for c in data["classes"]],
                thresholds,
            )


@lru_cache(maxsize=1)
def default_model() -> LinearModel | None:
    """The model shipped with the hub, or None when it has not been trained (the rules decide alone)."""
    if not MODEL_PATH.is_file():
        return None
    return LinearModel.load(MODEL_PATH)
