# hareway: `make run` serves the gateway plus one consumer; `make test` runs everything.
SHELL := bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
QUEUE ?= orders.persist

# For `make run` only: exported globally they would reach the tests' processes too.
# RABBITMQ_URL, when set, is used as it is; unset, `make run` tries
# HAREWAY_DEFAULT_RABBITMQ_URL (else amqp://guest:guest@localhost:5672/) and starts a
# RabbitMQ node of its own under .hareway/ when nothing answers there (hareway/devrun.py).
TOPOLOGY_FILE ?= infra/topology.yaml
RUN_ENV := TOPOLOGY_FILE=$(TOPOLOGY_FILE)

# `make newest`: its own venv with the newest versions every pin allows, and the tests
# that are not slow (NEWEST_TESTS= runs them all): a new minor of aio-pika or aiormq that
# drops an internal hareway relies on shows here before a user meets it.
NEWEST ?= .venv-newest
NEWEST_TESTS ?= -m "not slow"

.PHONY: help install run clean test lint types unit newest bench lock promtool

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install hareway with its dev tools

run: install ## run the gateway (http://$(HOST):$(PORT)) and a consumer of $(QUEUE), SQLite store
	@$(RUN_ENV) $(PY) -m hareway.devrun --host $(HOST) --port $(PORT) --queue $(QUEUE)

clean: ## remove what `make run` declared on the broker, its private node and its SQLite file
	-@[ -n "$$RABBITMQ_URL" ] || export RABBITMQ_URL="$${HAREWAY_DEFAULT_RABBITMQ_URL:-amqp://guest:guest@localhost:5672/}"; \
	$(PY) -m hareway.broker >/dev/null 2>&1 && $(VENV)/bin/hareway topology delete -f $(TOPOLOGY_FILE)
	rm -rf .hareway hareway.db hareway.db-wal hareway.db-shm

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: install ## mypy strict on the packages, the tests and the bench
	$(VENV)/bin/mypy gateway consumers hareway tests bench

test: lint types .tools/bin/promtool ## lint, types, and the whole suite against the real broker and databases
	$(PY) -m pytest

unit: install .tools/bin/promtool ## only the tests that need no service (none has to be running)
	$(PY) -m pytest -m "not broker and not postgres"

promtool: .tools/bin/promtool ## Debian's promtool into .tools/bin, for the alert rules' tests (no Prometheus server)

.tools/bin/promtool:
	@mkdir -p .tools/bin .tools/deb
	cd .tools/deb && apt-get download prometheus && dpkg -x prometheus_*.deb extracted
	cp .tools/deb/extracted/usr/bin/promtool .tools/bin/promtool && rm -rf .tools/deb
	.tools/bin/promtool --version

lock: install ## pin the image's dependencies with hashes: infra/requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --generate-hashes --no-header --quiet \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu -o infra/requirements.lock

newest: ## the tests on the newest versions the pins allow, in $(NEWEST)
	$(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/python -m pip install --quiet --upgrade pip
	$(NEWEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	@$(NEWEST)/bin/python -m pip list --format=freeze \
	  | grep -iE '^(aio-pika|aiormq|pamqp|uvicorn|fastapi|starlette|sqlalchemy|pydantic)=='
	$(NEWEST)/bin/python -m pytest $(NEWEST_TESTS)

bench: install ## race hareway against a bare publisher and its peers; writes docs/performance.md
	$(PY) -m pip install --quiet -e '.[bench]'
	@command -v wrk >/dev/null || echo "wrk is not installed (apt-get install wrk): the Python load generator is used"
	$(PY) -m bench
