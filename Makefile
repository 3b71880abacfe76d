# One entry point for every task; `make test` and `make run` create the virtualenv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint protos protos-check bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -c constraints.txt setuptools
	$(PY) -m pip install --quiet --no-build-isolation -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: setup
	$(PY) -m client.cli demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy tss client coordinator enclave host relay devkms shardkeep bench

# Regenerates the committed protobuf/gRPC code from protos/ (tests/test_protos.py checks it is fresh).
protos: setup
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. protos/shardkeep/v1/*.proto

bench: setup
	$(PY) -m pip install --quiet --no-build-isolation -c constraints.txt -e '.[dev,bench]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
