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
RABBITMQ_URL ?= amqp://guest:guest@localhost:5672/
TOPOLOGY_FILE ?= infra/topology.yaml
RUN_ENV := RABBITMQ_URL=$(RABBITMQ_URL) TOPOLOGY_FILE=$(TOPOLOGY_FILE)

.PHONY: help install run test lint types unit bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install hareway with its dev tools

run: install ## run the gateway (http://$(HOST):$(PORT)) and a consumer of $(QUEUE), SQLite store
	@$(RUN_ENV) $(PY) -m hareway.broker
	@trap 'kill $$consumer 2>/dev/null; wait $$consumer' EXIT; \
	$(RUN_ENV) $(PY) -m consumers --queue $(QUEUE) & consumer=$$!; \
	$(RUN_ENV) $(PY) -m gateway --host $(HOST) --port $(PORT)

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

types: install ## mypy strict on the packages
	$(VENV)/bin/mypy gateway consumers hareway

test: lint types ## lint, types, and the whole suite against the real broker and databases
	$(PY) -m pytest

unit: install ## only the tests that need no service
	$(PY) -m pytest -m "not broker and not postgres"

bench: install ## race hareway against a bare aio-pika publisher; writes docs/performance.md
	$(PY) -m bench
