# adshub — two commands on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all setup run test fault bench soak lint format system-deps rabbitmq clean model

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

system-deps:
	@scripts/system-deps.sh

rabbitmq:
	@scripts/ensure-rabbitmq.sh

run: setup rabbitmq
	$(BIN)/adshub run

test: setup system-deps rabbitmq lint
	$(BIN)/pytest $(PYTEST_ARGS)

fault: setup rabbitmq
	$(BIN)/pytest -m fault $(PYTEST_ARGS)

# Journals of history the bench registers into and pages over; a million takes about an hour to generate
# the first time (var/bench/journal-N is reused): make bench BENCH_JOURNALS="100000 1000000".
BENCH_JOURNALS ?= 100000

bench: setup system-deps rabbitmq
	$(BIN)/python -m tests.bench $(BENCH_ARGS)
	$(BIN)/python -m tests.bench --no-floor --residents 10 --messages 1000 --warmup 100 --big-letter 20
	$$(command -v taskset >/dev/null && echo taskset -c 0) $(BIN)/python -m tests.bench_classify
	$(BIN)/python -m tests.bench_search 100000
	for n in $(BENCH_JOURNALS); do $(BIN)/python -m tests.bench --no-floor --journal $$n && $(BIN)/python -m tests.bench_inbox $$n || exit 1; done

# Every channel at once for SOAK_MINUTES (default 10), then: nothing lost or doubled, memory and descriptors.
SOAK_MINUTES ?= 10
soak: setup system-deps rabbitmq
	$(BIN)/python -m tests.soak --minutes $(SOAK_MINUTES)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

# Retrain the classifier's learned model (domain/model/classifier.npz) from the labeled sets; prints
# cross-validated figures. Add the dispatchers' corrections from the journal with ARGS=--journal.
model: setup
	$(BIN)/adshub classify --train $(ARGS)
