# `make demo` and `make test` create .venv when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_CONSTRAINTS ?= constraints.txt
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: test test-all demo lint format clean dist-check

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -c $(TORCH_CONSTRAINTS)
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check vggfeat recipes benchmarks tests
	$(VENV)/bin/ruff format --check vggfeat recipes benchmarks tests

format: $(VENV)/.installed
	$(VENV)/bin/ruff format vggfeat recipes benchmarks tests
	$(VENV)/bin/ruff check --fix vggfeat recipes benchmarks tests

test: lint
	$(PY) -m pytest -q -m "not slow"

test-all: lint
	$(PY) -m pytest -q

# sdist + wheel, the wheel installed into a fresh venv: import, --version, info (.ci/dist_check)
dist-check: $(VENV)/.installed
	PY=$(PY) .ci/dist_check

demo: $(VENV)/.installed
	$(PY) -m vggfeat.demo

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
