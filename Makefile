# The two commands a new machine needs: `make demo` and `make test` (`make test-fast` between
# edits). Each creates the virtual environment, installs the package and generates the
# protobuf code first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/coalition/v1/*.proto)
GENERATED := src/coalition/v1/.generated

.PHONY: demo test test-fast lint proto clean browser

demo: $(STAMP) $(GENERATED)
	$(BIN)/coalition demo

# The suite runs in TEST_WORKERS processes (pytest-xdist), each with databases of its own
# (tests/conftest.py): on this 2-core machine about 4 minutes instead of 12, since most tests
# wait on a database, a hub or a process. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2

test: $(STAMP) $(GENERATED) lint browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The loop between edits: the domain and the service functions on SQLite, no lint; `make test`
# runs everything (both databases, the API, the real processes, faults, bench, browser).
test-fast: $(STAMP) $(GENERATED)
	$(BIN)/python -m pytest -q -m "(unit or integration) and not postgresql" $(PYTEST_ARGS)

lint: $(STAMP) $(GENERATED)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src
	$(BIN)/buf lint

proto: $(GENERATED)

# The report test renders report.html in Debian's chromium: install it when missing, as root
# (CI and these machines are); otherwise say how, and let that test fail with the same advice.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "chromium is missing: apt-get install chromium (needed by tests/reports)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Generated code is never edited: it is rebuilt from protos/ and ignored by git.
$(GENERATED): $(PROTOS) $(STAMP)
	rm -rf src/coalition/v1
	mkdir -p src/coalition/v1
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=src --grpc_python_out=src \
		--pyi_out=src $(PROTOS)
	touch src/coalition/v1/__init__.py $@

clean:
	rm -rf $(VENV) src/coalition/v1
