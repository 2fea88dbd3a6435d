# Two commands do all the set-up on a machine with only python3:
#   make demo   backtest of the example agent pipeline on a bundled real trace
#   make test   lint, type check, all tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The demo needs the package with its forecasting and plotting extras (the results in
# docs/results.md are made with them); the tests also need the test tools and every optional
# integration (Kubernetes, Ray Serve, boto3 and a moto server, KEDA's gRPC) their tests drive.
BASE   := $(VENV)/.installed-base
FULL   := $(VENV)/.installed-test

.PHONY: demo test lint typecheck unit bench bench-live clean

$(BASE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[forecast,plots]"
	touch $@

$(FULL): $(BASE)
	$(BIN)/pip install --quiet -e ".[test,all]"
	touch $@

demo: $(BASE)
	$(BIN)/elastiscale backtest examples/pipelines/agent.yaml \
		--trace examples/traces/azure_llm_2023_conv_1s.csv --rate-scale 4 --out out/demo

lint: $(FULL)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/lint-imports

typecheck: $(FULL)
	$(BIN)/mypy

unit: $(FULL)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(FULL)
	$(BIN)/python benchmarks/engine_tick.py

# Ray Serve's autoscaling against elastiscale on a chain of deployments on a local Ray Serve,
# two slices of trace x three seeds x four runs (ceiling included), and the simulator's
# prediction (needs the `prometheus` binary; exits 3 without scoring when the host cannot keep
# up, see benchmarks/live_ray/host.py). Not part of `make test`, which runs its smoke version.
bench-live: $(FULL)
	$(BIN)/python benchmarks/live_ray/run.py --out benchmarks/live_ray/out

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
