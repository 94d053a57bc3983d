# Two entry points (see README): `make demo` and `make check`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo check lint typecheck typing-suite test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/durable-jobs demo

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests typing_tests benchmarks docs/examples
	$(BIN)/ruff format --check src tests typing_tests benchmarks docs/examples

typecheck: $(BIN)/.installed
	$(BIN)/mypy --strict src
	$(BIN)/pyright src
	$(BIN)/mypy --strict docs/examples
	$(BIN)/pyright docs/examples

# The cases' mypy cache lives in this checkout: pytest-mypy-plugins defaults to one under
# /tmp, which every checkout on the machine shares (and corrupts for the others).
typing-suite: $(BIN)/.installed
	mkdir -p .mypy-cases
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest typing_tests -q --mypy-ini-file=typing_tests/mypy-cases.ini --mypy-testing-base=$(CURDIR)/.mypy-cases

test: $(BIN)/.installed
	$(BIN)/pytest tests -q

check: lint typecheck typing-suite test

clean:
	rm -rf $(VENV) .mypy_cache .mypy-cases .pytest_cache

# Benchmarks (not tests): one Markdown table, about two minutes. The bench extra
# (tenacity, dbos) is installed when missing; a row says so if it cannot be.
.PHONY: bench
bench: $(BIN)/.installed
	@$(BIN)/python -c 'import tenacity, dbos, procrastinate' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[bench]' || echo "bench: could not install the bench extra; its rows say why"
	$(BIN)/python -m benchmarks
