# The two commands of README.md: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: run test test-embedded lint install bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# The web app's browser tests drive Debian's Chromium: installed when missing, where we may.
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  else echo "note: $(CHROMIUM) is missing (apt install chromium): the browser tests will be skipped"; fi; }
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

# procreche against its peers, side by side (docs/benchmarks.md). Installs each peer in an
# environment of its own (~/.cache/procreche-bench) and uses DATABASE_URL / REDIS_URL, or
# the machine's servers on 127.0.0.1 (embedded ones if none answer). About 15 minutes;
# bench-quick proves the harness.
bench: $(STAMP)
	$(BIN)/python -m bench.compare

bench-quick: $(STAMP)
	$(BIN)/python -m bench.compare --quick --out var/bench-quick

clean:
	rm -rf $(VENV) var
