# The two commands a new machine needs: `make demo` and `make test`. Each creates the virtual
# environment, installs the package and generates the protobuf code first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/coalition/v1/*.proto)
GENERATED := src/coalition/v1/.generated

.PHONY: demo test lint proto clean

demo: $(STAMP) $(GENERATED)
	$(BIN)/coalition demo

test: $(STAMP) $(GENERATED) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) $(GENERATED)
	$(BIN)/ruff check src tests
	$(BIN)/buf lint

proto: $(GENERATED)

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
