# `make demo` and `make test` create .venv when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_CONSTRAINTS ?= constraints.txt
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: test test-slow test-all demo lint format clean dist-check

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -c $(TORCH_CONSTRAINTS)
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check vggfeat recipes benchmarks tests
	$(VENV)/bin/ruff format --check vggfeat recipes benchmarks tests
	$(VENV)/bin/lint-imports --no-cache  # the layers contract in pyproject.toml (docs/architecture.md)

format: $(VENV)/.installed
	$(VENV)/bin/ruff format vggfeat recipes benchmarks tests
	$(VENV)/bin/ruff check --fix vggfeat recipes benchmarks tests

# One thread per test process: the tests' nets are tiny, and two threads spinning on a busy 2-core
# machine cost several times the CPU time of one (the tests' subprocesses set the same).
TEST_THREADS ?= 1
PYTEST := OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q

# the everyday suite: everything but the tests marked slow (see the README's Development section)
test: lint
	$(PYTEST) -m "not slow"

# the rest: demo and miniature runs, scripts end to end, multi-rank jobs, kills, packaging
# (exit status 5, no test collected, is not a failure)
test-slow: $(VENV)/.installed
	$(PYTEST) -m slow || [ $$? -eq 5 ]

test-all: test test-slow

# sdist + wheel, the wheel installed into a fresh venv: import, --version, info (.ci/dist_check)
dist-check: $(VENV)/.installed
	PY=$(PY) .ci/dist_check

demo: $(VENV)/.installed
	$(PY) -m vggfeat.experiments.demo

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
