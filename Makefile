# The two commands of the README. Each sets up .venv on its own (scripts/setup_env.sh).
PY := .venv/bin/python

.PHONY: setup test quickstart study bench

setup:
	@bash scripts/setup_env.sh

test: setup
	PYTHON=$(PY) bash scripts/gpu_check.sh --dry-run
	$(PY) -m pytest -q tests

quickstart: setup
	$(PY) -m pipelines.quickstart $(ARGS)

study: setup
	$(PY) -m pipelines.study --config recipes/study/smollm2.yaml $(ARGS)

bench: setup
	$(PY) -m benchmarks.bench_attribution $(ARGS)
