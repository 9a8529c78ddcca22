# Two entry points: `make run` (the runner on embedded defaults) and `make test` (everything).
# Both bootstrap what they need and are idempotent.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install only when the dependency list changes.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test bootstrap lint typecheck docs-check pytest docs clean

bootstrap: $(STAMP)
	@scripts/install_codex.sh
	@scripts/install_sandbox_deps.sh

$(STAMP): pyproject.toml
	@scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	@rm -f $(VENV)/.installed-*
	@touch $@

run: bootstrap
	$(BIN)/app serve

test: bootstrap lint typecheck docs-check pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

docs-check:
	$(BIN)/python scripts/gen_events_doc.py --check
	$(BIN)/python scripts/gen_config_doc.py --check

pytest:
	$(BIN)/python -m pytest

docs:
	$(BIN)/python scripts/gen_events_doc.py
	$(BIN)/python scripts/gen_config_doc.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
