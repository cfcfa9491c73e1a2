# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# TensorFlow's build: cpu (the default) or gpu (CUDA), e.g. `make run TENSORFLOW=gpu`.
TENSORFLOW ?= cpu
STAMP := $(VENV)/.installed-$(TENSORFLOW)-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: install run test lint kafka-fetch registry-fetch system-deps clean

# Debian's prometheus package gives the tests a real Prometheus server and promtool.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@case "$(TENSORFLOW)" in cpu|gpu) ;; \
	  *) echo "TENSORFLOW must be cpu or gpu, got '$(TENSORFLOW)'"; exit 2;; esac
	@# The other build's package would share tensorflow's files: it goes first.
	@other=$$([ "$(TENSORFLOW)" = gpu ] && echo tensorflow-cpu || echo tensorflow); \
	  ! $(BIN)/python -m pip show --quiet $$other 2>/dev/null || \
	  $(BIN)/python -m pip uninstall --quiet --yes $$other
	$(BIN)/python -m pip install --quiet -e '.[$(TENSORFLOW),dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

## Start the daemon on the embedded default (simulated sensors, no Kafka needed).
run: install
	$(BIN)/streamdet run --config config.yaml

## Install everything, provision a real Kafka broker (cached jars), lint and run all tests.
test: install system-deps kafka-fetch registry-fetch lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check streamdet tests scripts benchmarks deploy

system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  echo "installing Debian's prometheus package (Prometheus server and promtool) ..."; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; \
	fi
	@command -v java >/dev/null && command -v mvn >/dev/null || \
	  { echo "the local Kafka broker needs Java 17+ and Maven (apt-get install openjdk-17-jre-headless maven)"; exit 1; }

kafka-fetch:
	$(PYTHON) scripts/local_kafka.py fetch

## A real schema registry for the Avro and Protobuf tests (Apicurio Registry, cached).
registry-fetch:
	$(PYTHON) scripts/local_registry.py fetch

clean:
	rm -rf $(VENV) eval models alerts.jsonl
