# The two set-up commands of the README: `make demo` and `make test`. Each installs what it needs
# on a fresh Debian machine with Python 3.11: a .venv with the project, and Debian's prometheus.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast soak bench crd prometheus clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "modelrollout needs Python >= 3.11 (found $$($(PYTHON) --version 2>&1))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); \
	  else echo "python3 -m venv failed: install Debian's python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

# Prometheus comes from Debian: installed when missing and we are root, otherwise a one-line instruction.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null; \
	  else echo "prometheus not found: install Debian's package (sudo apt-get install prometheus) and run make again"; exit 1; fi; }

demo: $(STAMP) prometheus
	$(BIN)/modelrollout demo

# Two workers, a test file each at a time (module fixtures stay whole): most of the suite's time is
# spent waiting on rollout intervals, not computing. Files are handed out slowest directories first
# (tests/conftest.py), not by test count (xdist's default, which started the longest file last).
# The slowest tests are listed at the end.
# The soak variants of the load tests run for minutes each: `make soak` (SOAK_SECONDS sets how long).
test: $(STAMP) prometheus
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15 -m "not soak"

soak: $(STAMP) prometheus
	$(BIN)/python -m pytest -m soak tests/reliability

# Unit tests only: seconds, no services.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# The benchmarks (benchmarks/README.md): each prints its figures as ratios measured in the same run.
# All but the first start real processes on 127.0.0.1 (model servers, a router, an mlflow server,
# Prometheus, the operator against the tests' API emulator); about 50 minutes in all, 31 of them
# the live decision runs (rollouts decided by the real parts, one after another).
bench: $(STAMP) prometheus
	$(BIN)/python -m benchmarks.decisions
	$(BIN)/python -m benchmarks.decisions_live
	$(BIN)/python -m benchmarks.upstream_client
	$(BIN)/python -m benchmarks.router_overhead
	$(BIN)/python -m benchmarks.comparator_capacity
	$(BIN)/python -m benchmarks.registry_poll
	$(BIN)/python -m benchmarks.operator_scale
	$(BIN)/python -m benchmarks.promotion_latency

# The ModelRollout CRD, generated from canary/decision/spec.py (through a temporary file, so a failure
# leaves the committed one whole), and the chart's crds/, which Helm installs verbatim: a mirror
# of manifests/crd/.
CRD := manifests/crd/modelrollouts.modelrollout.io.yaml
crd: $(STAMP)
	$(BIN)/python -m controller.kube.crd > $(CRD).tmp || { rm -f $(CRD).tmp; exit 1; }
	mv $(CRD).tmp $(CRD)
	rm -f charts/modelrollout/crds/*.yaml
	cp manifests/crd/*.yaml charts/modelrollout/crds/

clean:
	rm -rf $(VENV) .modelrollout .pytest_cache
