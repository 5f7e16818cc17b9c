# Two commands on a fresh machine (each sets up .venv itself, idempotently):
#   make demo   the main job on its embedded default (no camera, no downloads)
#   make test   the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: env demo test bench colcon-check clean

env:
	@bash scripts/setup_env.sh

demo: env
	$(PY) -m depth_ego_ros.cli.main demo --out demo_out

test: env
	$(PY) -m pytest test -ra --timeout=600 $(PYTEST_ARGS)

bench: env
	$(PY) bench/bench_estimator.py

# Prove the colcon/ament_python path inside the venv (install/ layout, entry points, share files).
colcon-check: env
	$(PY) -m pytest test/test_packaging.py -v

clean:
	rm -rf build install log demo_out .pytest_cache
