# Two entry points, both self-installing into .venv: `make run` and `make test`. The venv gets the `test`
# extra (pytest, pytest-benchmark, Hypothesis), which make test and make bench need and certstorm itself does not.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-slow lint bench bench-compare bench-baseline bench-smoke bench-gate differential clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "certstorm needs Python 3.11+"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/certstorm run $(ARGS)

# pytest exits 5 when it collects no tests. Without selection arguments that is not a failure of the code
# under test; with them (PYTEST_ARGS='-k typo') it means nothing ran, which must not pass.
# In parallel (pytest-xdist), a module's tests on one worker so its fixtures start once; twice as many
# workers as cores (at most 8), since many tests spend their time waiting on a hub or a swarm they started.
# The ten slowest tests are printed at the end.
WORKERS ?= $(shell $(PYTHON) -c 'import os; print(min(8, 2 * len(os.sched_getaffinity(0))))')
test: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadscope --durations=10 $(PYTEST_ARGS) \
		|| { rc=$$?; [ $$rc -eq 5 ] && [ -z "$(strip $(PYTEST_ARGS))" ]; }

# The tests that are long by nature (whole capacity runs, full-size chaos), marked slow; CI runs them too.
test-slow: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadscope --durations=10 -m slow $(PYTEST_ARGS)

# Ruff's lint and format checks, with the rules in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every benchmark, timed, with its cost in calibration verifies in the JSON.
bench: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider bench --benchmark-only --benchmark-json=results/bench-latest.json \
		--benchmark-columns=median,ops,rounds $(PYTEST_ARGS)

# Run every benchmark and judge it against the stored baseline (THRESHOLD: allowed slowdown, default 15%).
THRESHOLD ?= 0.15
bench-compare: bench
	$(PY) -m bench.compare results/baselines/bench.json results/bench-latest.json --threshold $(THRESHOLD)

# Refresh the baseline on purpose, after a change that is meant to alter the costs.
bench-baseline: bench
	mkdir -p results/baselines
	cp results/bench-latest.json results/baselines/bench.json
	$(PY) -m bench.compare --slim results/baselines/bench.json

# Every benchmark once, untimed, so none can rot (CI runs this after the tests).
bench-smoke: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider bench --benchmark-disable

# CI's gate for gross regressions: the warm and reconnect authentications and the hub's CPU per
# authentication, best of at most 3 runs, fail past 1.5x their baseline cost (docs/benchmarks.md).
bench-gate: $(STAMP)
	$(PY) -m bench.gate

# The warm-versus-cold differential with a long randomised run (make test runs 150 fixed-seed examples).
differential: $(STAMP)
	CERTSTORM_DIFFERENTIAL_EXAMPLES=5000 $(PY) -m pytest -q -p no:cacheprovider tests/test_differential.py

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks

chaos: $(STAMP)
	$(PY) tests/chaos.py $(ARGS)
