"""Throughput of `adshub classify` decisions on one core: ``python -m tests.bench_classify [ROUNDS]``.

Every message is made unique (a flat number is appended) so that the per-text
cache does not flatter the figure; word-level caches warm up as they would in
production. The first pass over the corpus (cold word caches) is reported too.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from domain.address import extract_address
from domain.classify import classify, rules_only
from domain.learned import default_model
from domain.phones import extract_phones
from tests.helpers import REPO, SHARED


def corpus() -> list[str]:
    texts = []
    for path in (SHARED / "domain" / "dev-messages.jsonl", REPO / "tests" / "data" / "own-messages.jsonl"):
        if path.exists():
            texts.extend(json.loads(line)["text"] for line in path.open(encoding="utf-8") if line.strip())
    return texts


def run(texts: list[str], rounds: int, pass_number: int, decide: Callable[[str], object], full: bool = False) -> float:
    """Messages per second; ``pass_number`` keeps each pass's texts distinct from every other pass's."""
    started = time.perf_counter()
    count = 0
    for r in range(rounds):
        for i, text in enumerate(texts):
            unique = f"{text} кв {(pass_number * 1000 + r) * 10_000 + i}"
            decide(unique)
            if full:
                extract_address(unique)
                extract_phones(unique)
            count += 1
    return count / (time.perf_counter() - started)


def rules(text: str) -> object:
    return rules_only(text)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    texts = corpus()
    cold = run(texts, 1, 0, classify)
    warm = run(texts, rounds, 1, classify)
    alone = run(texts, rounds, 2, rules)
    full = run(texts, rounds, 3, classify, full=True)
    model = "the shipped model" if default_model() is not None else "no model shipped"
    print(f"messages: {len(texts)} distinct × {rounds} rounds, each made unique; {model}; one process")
    print(f"classify, first pass (cold word caches): {cold:,.0f} msg/s")
    print(f"classify (rules + model):                {warm:,.0f} msg/s")
    print(f"rules alone:                             {alone:,.0f} msg/s")
    print(f"classify + address + phone (adshub classify output): {full:,.0f} msg/s")


if __name__ == "__main__":
    main()
