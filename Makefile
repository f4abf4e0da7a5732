# parentgate: `make run` starts the daemon on the embedded default; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.toml
# Parallel workers for the suite (tests use free ports and private temp directories).
TEST_WORKERS ?= 2

.PHONY: run test check-config bench clean

$(BIN)/parentgate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/parentgate
	$(BIN)/parentgate --config $(CONFIG) run

test: $(BIN)/parentgate
	$(BIN)/pytest -n $(TEST_WORKERS) -q

check-config: $(BIN)/parentgate
	$(BIN)/parentgate --config $(CONFIG) check-config

bench: $(BIN)/parentgate
	$(BIN)/python bench/smtp_throughput.py
	$(BIN)/python bench/triage_speed.py

clean:
	rm -rf $(VENV) var .pytest_cache build *.egg-info
