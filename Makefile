# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: venv data demo test lint wheel-check docs bench fuzz clean

# torch is installed first and pinned: 2.13.0 is the CPU build this machine keeps on disk; a bare `torch`
# requirement with no torch present would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian's package where apt-get is usable; otherwise vaekit downloads and verifies the files on first use.
data:
	@if [ -d $(FASHION_DIR) ]; then echo "Fashion-MNIST: $(FASHION_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) && \
	  echo "Fashion-MNIST: installed $(FASHION_DIR)" || echo "Fashion-MNIST: apt-get failed; vaekit will download it"; \
	else echo "Fashion-MNIST: vaekit will download and verify it on first use"; fi

demo: venv data
	rm -rf runs/demo
	$(BIN)/vaekit train --dataset fashion-mnist --epochs 10 --out runs/demo

test: venv lint
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs
	$(BIN)/mypy

# The wheel installed into a fresh virtual environment outside the clone must run (.ci/wheel-check says how).
wheel-check: venv
	PYTHON=$(PYTHON) BUILD_PYTHON=$(BIN)/python .ci/wheel-check

# The site in site/: the README's sections as pages and the API reference; --strict fails on a broken reference.
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
