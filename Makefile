# Two entry points: `make run` (the runner on embedded defaults) and `make test` (everything).
# Both bootstrap what they need and are idempotent (bootstrap installs bubblewrap and
# docker.io when missing: scripts/install_sandbox_deps.sh).

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

# The docker sandbox's tests need an engine and its image: with_docker.sh uses the engine
# that answers, or starts a private dockerd (stopped and cleaned up afterwards, whatever
# happens), and build-image builds the image from this host's Python (a no-op when current).
pytest:
	scripts/with_docker.sh sh -c '$(BIN)/app sandbox build-image; exec $(BIN)/python -m pytest'

docs:
	$(BIN)/python scripts/gen_events_doc.py
	$(BIN)/python scripts/gen_config_doc.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
