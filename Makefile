# Two commands do all the set-up on a machine with only python3:
#   make demo   backtest of the example agent pipeline on a bundled real trace
#   make test   lint, type check, all tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,ray,sagemaker]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/elastiscale backtest examples/pipelines/agent.yaml \
		--trace examples/traces/azure_llm_2023_conv_1s.csv --rate-scale 4 --out out/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_tick.py

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
