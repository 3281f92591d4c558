# Two entry points: `make demo` (the main job) and `make test` (the suite). Each installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel on disk; otherwise pip resolves a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/rvpo demo

bench: $(STAMP)
	$(PY) benchmarks/aggregation.py
	$(PY) benchmarks/rules.py
	$(PY) benchmarks/judge.py
	$(PY) benchmarks/pipeline.py

clean:
	rm -rf $(VENV) runs .pytest_cache
