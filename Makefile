# Two commands on a fresh machine (python3.11+ and make): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint db-up db-stop clean package bench

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

## The whole test suite, against a real PostgreSQL (embedded, or DATABASE_URL's server). An embedded server the
## tests had to start is stopped after them; one already running (make run) keeps running.
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

## Every benchmark, then bench/RESULTS.md (figure, target, machine, date). Long: the 100k-user volume alone
## takes about 15 minutes to generate the first time.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.generate_volume
	$(BIN)/python -m bench.rls_reads
	$(BIN)/python -m bench.question_selection
	$(BIN)/python -m bench.question_cache
	$(BIN)/python -m bench.webhook_throughput
	$(BIN)/python -m bench.import_time
	$(BIN)/python -m bench.evaluation_worker
	$(BIN)/python -m bench.analytics_day
	$(BIN)/python -m bench.abuse
	$(BIN)/python -m bench.account_deletion
	$(BIN)/python -m bench.account_deletion --pin-cores
	$(BIN)/python -m bench.replica
	$(BIN)/python -m bench.replica --pin-cores
	$(BIN)/python -m bench.backup
	$(BIN)/python -m bench.partitioning
	$(BIN)/python -m bench.adaptive
	$(BIN)/python -m bench.curation
	$(BIN)/python -m bench.peer
	$(BIN)/python -m bench.results

db-stop: $(STAMP)
	$(BIN)/prep db stop

## Everything the commands above create: the venv, the embedded database and its data, the Lambda artifacts, the
## template, and the npm tools the packaging and Supabase CLI tests install. bench/out/ (measurements) is kept.
clean:
	-[ -x $(BIN)/prep ] && $(BIN)/prep db stop
	rm -rf $(VENV) .local .pytest_cache .ruff_cache build .serverless node_modules *.egg-info
