# Two commands for a newcomer: `make demo` (sets up, runs the main job) and `make test` (sets up, runs the tests).
# Every target is idempotent: the venv is (re)built only when missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install datasets sysdeps test test-fast demo lint clean

install: $(STAMP) datasets

# Real data offline: Debian's dataset-fashion-mnist (the original 60k/10k IDX files) for the accuracy measurements.
# Checked on every run, whether or not the venv is up to date.
datasets:
	@if ! test -f $(FASHION_MNIST); then \
		if [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				dataset-fashion-mnist >/dev/null) || echo "note: could not install dataset-fashion-mnist"; \
		else \
			echo "note: for Fashion-MNIST run: sudo apt-get install dataset-fashion-mnist"; \
		fi; \
	fi

# Real peers for the device tests: OpenSSH's sshd (Jetson runner over ssh) and the adb client (Android runner).
sysdeps:
	@if ! test -x /usr/sbin/sshd || ! command -v adb >/dev/null || ! command -v ssh >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				openssh-server openssh-client adb >/dev/null; \
		else \
			echo "note: install openssh-server, openssh-client and adb (Debian packages) for the device tests"; \
		fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,export,dev]'
	@touch $(STAMP)

test: install sysdeps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install sysdeps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/pacb-edge models
	$(VENV)/bin/pacb-edge demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
