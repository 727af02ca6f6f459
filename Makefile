# cfclip: `make train` runs the main job on the embedded default, `make test` runs the fast test suite.
# Both install into .venv first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: help install train test test-full lint format clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv (if missing) and install cfclip with dev tools

train: $(STAMP) ## Train the default mapper on the embedded default world
	$(PY) -m src.train $(ARGS)

test: $(STAMP) ## Run the fast test suite
	$(PY) -m pytest -q

test-full: $(STAMP) ## Run every test, slow ones and notebooks included
	$(PY) -m pytest -q -m "not gpu"

lint: $(STAMP) ## ruff lint + format check, and the pre-commit hooks
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## Remove run outputs, caches and the venv
	rm -rf outputs multirun wandb lightning_logs .pytest_cache .ruff_cache $(VENV)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
