# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Each stamp marks one install done, so each target installs once (and again only when pyproject.toml changes).
CORE   := $(VENV)/.installed-core
DEV    := $(VENV)/.installed-dev
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: venv data demo test test-fast lint lint-quick wheel-check docs bench fuzz clean

# What `make demo` needs and no more: vaekit and its own dependencies, no extras. torch is installed first and pinned:
# 2.13.0 is the CPU build this machine keeps on disk; a bare `torch` requirement with no torch present would pull a
# multi-GB CUDA build. --no-compile: Python compiles only the modules a command imports (about 60 MB), not all of
# them (about 240 MB, most of it never imported).
$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile torch==2.13.0
	$(BIN)/pip install --quiet --no-compile -e .
	touch $(CORE)

# The rest, into the same environment: tests, lint, type checks and the optional integrations they exercise.
$(DEV): $(CORE)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV)

venv: $(DEV)

# Debian's package where apt-get is usable; otherwise vaekit downloads and verifies the files on first use.
data:
	@if [ -d $(FASHION_DIR) ]; then echo "Fashion-MNIST: $(FASHION_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) && \
	  echo "Fashion-MNIST: installed $(FASHION_DIR)" || echo "Fashion-MNIST: apt-get failed; vaekit will download it"; \
	else echo "Fashion-MNIST: vaekit will download and verify it on first use"; fi

demo: $(CORE) data
	rm -rf runs/demo
	$(BIN)/vaekit train --dataset fashion-mnist --epochs 10 --out runs/demo

# Every test, slow ones included.
test: venv lint
	$(BIN)/python -m pytest

# The unit tier for the edit-test loop: tests marked `slow` (whole trainings, processes, servers, benchmarks) left out.
test-fast: venv lint-quick
	$(BIN)/python -m pytest -m "not slow" -q

# ruff alone (about a second); `make lint` adds the type checks.
lint-quick: venv
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

lint: venv
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs
	$(BIN)/mypy

# The wheel installed into a fresh virtual environment outside the clone must run (.ci/wheel-check says how).
wheel-check: venv
	PYTHON=$(PYTHON) BUILD_PYTHON=$(BIN)/python .ci/wheel-check

# The site in site/: the pages under docs/ and the API reference; --strict fails on a broken reference.
docs: venv
	@$(BIN)/python -c "import mkdocs, mkdocstrings_handlers.python, pymdownx" 2>/dev/null || \
	  $(BIN)/pip install --quiet -e '.[docs]'
	$(BIN)/mkdocs build --strict

# Benchmarks print ratios against baselines measured in the same run and collect them in benchmarks/results.md;
# run them on an otherwise idle machine.
bench: venv data
	$(BIN)/python benchmarks/suite.py

# The fuzzer of every reader (tests/test_fuzz.py) at length: VAEKIT_FUZZ_EXAMPLES random cases per kind of file
# (default 500) instead of `make test`'s fixed dozen. It prints how many cases ran; failing cases go to runs/fuzz-failures.
fuzz: venv
	VAEKIT_FUZZ=soak $(BIN)/python -m pytest tests/test_fuzz.py

clean:
	rm -rf $(VENV) runs site dist build .pytest_cache .mypy_cache .ruff_cache
