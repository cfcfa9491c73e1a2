# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install run test lint kafka-fetch clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

## Start the daemon on the embedded default (simulated sensors, no Kafka needed).
run: install
	$(BIN)/streamdet run --config config.yaml

## Install everything, provision a real Kafka broker (cached jars), lint and run all tests.
test: install kafka-fetch lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check streamdet tests scripts benchmarks deploy

kafka-fetch:
	$(PYTHON) scripts/local_kafka.py fetch

clean:
	rm -rf $(VENV) eval models alerts.jsonl
