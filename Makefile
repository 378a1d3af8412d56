# Set-up is two commands:  make demo  (installs everything, runs the main job on the embedded default)
#                          make test  (installs everything, runs the test-suite)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
export RAY_AUTH_MODE ?= disabled

.PHONY: install demo test test-fast lint format bench clean

install: $(VENV)/.installed

# System packages (ffmpeg, espeak-ng for the demo corpus, sox) then Python packages. torch is installed
# first and pinned on every pip line so pip takes the CPU wheel and never a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml infra/install-system-deps.sh
	bash infra/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet torch==2.13.0 -e '.[test]'
	touch $@

demo: install
	$(PY) jobs/demo.py

test: install lint
	$(PY) -m pytest -q -ra

test-fast: install lint
	$(PY) -m pytest -q -ra -m "not slow"

# ruff: the format and a small rule set (pyproject.toml [tool.ruff]); `make format` applies both
lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
