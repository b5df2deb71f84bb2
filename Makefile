# The two front doors: `make run` and `make test`. Everything installs itself into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# ariadne-codegen pins graphql-core < 3.3 and Strawberry needs 3.3: the client
# generator gets a venv of its own (tests/test_codegen.py runs it).
CODEGEN_VENV := $(VENV)/codegen
CODEGEN_STAMP := $(CODEGEN_VENV)/.installed
CODEGEN_REQ := ariadne-codegen==0.19.0
HOST ?= 127.0.0.1
PORT ?= 8000
# The bundled demo sources point at this port.
DEMO_PORT := 9100

.PHONY: install run test bench schema clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

$(CODEGEN_STAMP): Makefile
	test -x $(CODEGEN_VENV)/bin/python || $(PYTHON) -m venv $(CODEGEN_VENV)
	$(CODEGEN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '$(CODEGEN_REQ)'
	touch $@

install: $(STAMP) $(CODEGEN_STAMP)

## Start the offline demo upstream and the gateway (embedded Postgres, demo sources).
## Either one failing (a port taken, say) stops the other: the gateway must not run
## against a demo upstream that is not there.
run: SHELL := /bin/bash
run: $(STAMP)
	@$(BIN)/gateway demo-upstream --port $(DEMO_PORT) & demo=$$!; \
	$(BIN)/gateway serve --host $(HOST) --port $(PORT) & gw=$$!; \
	trap 'kill $$demo $$gw 2>/dev/null; wait $$demo $$gw 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	echo "demo upstream on http://127.0.0.1:$(DEMO_PORT) (pid $$demo)"; \
	echo "open http://$(HOST):$(PORT)/graphql in a browser (GraphiQL); Ctrl-C stops both"; \
	wait -n $$demo $$gw; status=$$?; \
	echo "make run: a process exited (status $$status); stopping the other" >&2; \
	exit $$status

## Run the whole test suite (real Postgres, real HTTP on 127.0.0.1).
test: install
	$(BIN)/python -m pytest

## Benchmarks: ratios measured side by side in one run. BENCH_ARGS=--quick for a smoke run.
bench: install
	@status=0; \
	$(BIN)/python -m tests.bench.bench_upstream $(BENCH_ARGS) || status=1; \
	$(BIN)/python -m tests.bench.bench_feed_lag || status=1; \
	$(BIN)/python -m tests.bench.bench_ops_warm $(BENCH_ARGS) || status=1; \
	$(BIN)/python -m tests.bench.resilience $(BENCH_ARGS) || status=1; \
	$(BIN)/python -m tests.bench.bench_edge $(BENCH_ARGS) || status=1; \
	$(BIN)/python -m tests.bench.bench_warm $(BENCH_ARGS) || status=1; \
	$(BIN)/python -m tests.bench.bench_live $(BENCH_ARGS) || status=1; \
	exit $$status

## Regenerate schema.graphql from the code.
schema: install
	$(BIN)/gateway export-schema > schema.graphql

clean:
	rm -rf $(VENV) .gateway .pytest_cache tests/audit/node_modules
