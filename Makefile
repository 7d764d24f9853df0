# Two commands on a fresh machine (python3.11+ and make): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint db-up db-stop clean package

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "python3.11+ is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## The local platform: embedded PostgreSQL, migrated and seeded, then every function on localhost until Ctrl-C.
run: $(STAMP)
	$(BIN)/prep db up
	$(BIN)/prep serve

## The whole test suite, against a real PostgreSQL (embedded, or DATABASE_URL's server).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Lambda artifacts (build/<package>.zip) and the CloudFormation template (.serverless/), for STAGE (dev).
## Offline as far as AWS goes: installs osls from package-lock.json if missing; needs node/npm and PyPI.
package: $(STAMP)
	$(BIN)/python scripts/package.py --stage $${STAGE:-dev}

db-stop: $(STAMP)
	$(BIN)/prep db stop

clean:
	-$(BIN)/prep db stop
	rm -rf $(VENV) .local .pytest_cache .ruff_cache
