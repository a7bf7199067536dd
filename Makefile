# Fresh machine: `make run` or `make test`. Both create .venv when missing.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run web test lint pytest bench bench-quick bench-gpu soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# `make run ARGS="--port 8001"` passes options to the program.
run: $(STAMP)
	$(BIN)/python -m bot $(if $(wildcard config.toml),--config config.toml,) $(ARGS)

web: $(STAMP)
	$(BIN)/python -m web $(if $(wildcard config.toml),--config config.toml,) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy engine bot web

# The browser test drives Debian's chromium (Playwright's own browser download does not work here).
/usr/bin/chromium:
	apt-get update -qq && apt-get install -y -qq chromium >/dev/null

# The remote-worker tests start their own redis-server (Debian's package) on a free port.
/usr/bin/redis-server:
	apt-get update -qq && apt-get install -y -qq redis-server >/dev/null

pytest: $(STAMP) /usr/bin/chromium /usr/bin/redis-server
	$(BIN)/python -m pytest -q --durations=20

test: lint pytest

# CPU benchmarks against bare diffusers (~12 min on 2 cores); bench-quick leaves out fullsize-step.
bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

# On a CUDA machine: SD 2.1 architecture, random weights, fp16 (see bench/gpu.sh).
bench-gpu:
	bash bench/gpu.sh

soak: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --timeout 3600 -rP
	IMAGINE_SCHEMATHESIS_EXAMPLES=1000 $(BIN)/python -m pytest -q --timeout 3600 tests/web/test_openapi.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
