# Two entry points (see README): `make demo` and `make check`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo check lint typecheck typing-suite mutate test clean

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

typing-suite: $(BIN)/.installed
	$(BIN)/pytest typing_tests -q

# Not part of check (about 25 minutes on a shared 2-core machine): break the library's types
# on purpose and record how many cases notice, per checker, in docs/typing.md.
mutate: $(BIN)/.installed
	$(BIN)/python -m typing_tests.mutate --doc

test: $(BIN)/.installed
	$(BIN)/pytest tests -q

check: lint typecheck typing-suite test

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache

# Benchmarks (not tests): one Markdown table, about two minutes. The bench extra
# (tenacity, dbos) is installed when missing; a row says so if it cannot be.
.PHONY: bench
bench: $(BIN)/.installed
	@$(BIN)/python -c 'import tenacity, dbos, procrastinate' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[bench]' || echo "bench: could not install the bench extra; its rows say why"
	$(BIN)/python -m benchmarks
