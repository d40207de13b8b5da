# Two entry points: `make run` (set up, then `dvc repro`) and `make test` (set up, then pytest,
# one worker per core; a test file stays on one worker, so its module fixtures are built once).
# TORCH_SPEC picks the torch build; override it for your machine, e.g.
#   make run TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: setup run test clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -n auto --dist loadfile
