# The README's two commands: `make demo` and `make test`. Each builds .venv/ on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv demo test lint

venv: $(VENV)/.installed

# torch is pinned to the CPU wheel by constraints.txt. nnunetv2 pulls timm, and timm pulls the
# PyPI torchvision, which cannot load its operators beside the CPU torch; nothing here needs
# either, so both are removed to keep them off every import path (MONAI then skips them).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip uninstall --quiet -y torchvision timm
	touch $@

demo: venv
	$(PY) -m benchmark.run experiment=demo

test: venv
	$(PY) -m pytest

lint: venv
	$(PY) -m ruff check benchmark tests
