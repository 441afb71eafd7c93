"""Throughput of `adshub classify` decisions on one core: ``python -m tests.bench_classify [ROUNDS]``.

Every message is made unique (a flat number is appended) so that the per-text
cache does not flatter the figure; word-level caches warm up as they would in
production. The first pass over the corpus (cold word caches) is reported too.
"""

from __future__ import annotations

import json
import sys
import time

from domain.address import extract_address
from domain.classify import classify
from domain.phones import extract_phones
from tests.helpers import REPO, SHARED


def corpus() -> list[str]:
    texts = []
    for path in (SHARED / "domain" / "dev-messages.jsonl", REPO / "tests" / "data" / "own-messages.jsonl"):
        if path.exists():
            texts.extend(json.loads(line)["text"] for line in path.open(encoding="utf-8") if line.strip())
    return texts


def run(texts: list[str], rounds: int, full: bool) -> float:
    started = time.perf_counter()
    count = 0
    for r in range(rounds):
        for i, text in enumerate(texts):
            unique = f"{text} кв {r * 10_000 + i}"
            classify(unique)
            if full:
                extract_address(unique)
                extract_phones(unique)
            count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    texts = corpus()
    cold = run(texts, 1, full=False)
    warm = run(texts, rounds, full=False)
    full = run(texts, rounds, full=True)
    print(f"messages: {len(texts)} distinct × {rounds} rounds, each made unique")
    print(f"classify, first pass (cold word caches): {cold:,.0f} msg/s")
    print(f"classify:                                {warm:,.0f} msg/s")
    print(f"classify + address + phone (adshub classify output): {full:,.0f} msg/s")


if __name__ == "__main__":
    main()
