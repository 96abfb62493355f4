# Each target sets itself up: a virtualenv in .venv, the project and its dev tools installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit browser kafka clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## run: the whole pipeline on its default broker (Apache Kafka when Java 17+ and Maven are
## here, else Tansu; PAYMENTS_DEV_BROKER=kafka|tansu chooses), Redis, sandbox, worker, ingress
run: $(STAMP)
	$(BIN)/payments dev

## test: lint, type-check, then every test (unit + against the real stack on Apache Kafka),
## then the tests marked `tansu` again on the Tansu fallback broker
test: lint typecheck browser kafka
	$(BIN)/python -m pytest -q --durations=15
	PAYMENTS_TEST_BROKER=tansu $(BIN)/python -m pytest -q -m tansu

## kafka: Apache Kafka's jars from Maven Central, once per machine (needs Java 17+ and Maven)
kafka: $(STAMP)
	$(BIN)/payments kafka fetch

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## browser: Debian's chromium, for the dashboard test (Playwright drives it; nothing downloaded)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

## unit: the pure tests only; no services
unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .payments .pytest_cache .mypy_cache .ruff_cache *.egg-info
