# The two commands of README.md: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-embedded lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/procreche serve --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Uses DATABASE_URL / REDIS_URL when set, embedded servers otherwise.
test: lint
	$(BIN)/pytest -q

test-embedded: $(STAMP)
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -q

clean:
	rm -rf $(VENV) var
