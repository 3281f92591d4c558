# Two entry points: `make demo` (the main job) and `make test` (the suite). Each installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: on the project's CI machines a CPU wheel of 2.13.0 lies on disk (pip's find-links).
# Elsewhere plain PyPI serves a multi-GB CUDA build for Linux; for the CPU build there, run
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# Every part: the core install (gateway, worker, rules, judge with an OpenAI-compatible backend) needs no torch;
# the extras add the local judge grader, the trainer, the benchmarks and the test tools.
EXTRAS := judge-local,trainer,bench,test
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
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
	$(PY) benchmarks/routing.py

clean:
	rm -rf $(VENV) runs .pytest_cache
