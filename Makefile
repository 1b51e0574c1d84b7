# `make repro` and `make test` each do the whole set-up on a fresh machine, then run.
# Set-up is idempotent: a stamp file skips it while pyproject.toml is unchanged.
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed
# The tests also need the test references and optional engines (dev, Ray, S3); `make repro` does not, so it does
# not wait for them.
TESTSTAMP := $(VENV)/.installed-test
TORCH  := torch==2.13.0
export DVC_NO_ANALYTICS := 1
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@# open3d needs libusb at import time (Debian package); install it when missing and we can.
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq libusb-1.0-0 >/dev/null || (apt-get update -qq && apt-get install -y -qq libusb-1.0-0); \
	  else echo "warning: libusb-1.0-0 missing; install it for open3d" >&2; fi; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first and pinned: the CPU build on this disk, so nothing later pulls a CUDA build.
	$(BIN)/python -m pip install -q --no-compile $(TORCH)
	$(BIN)/python -m pip install -q --no-compile -e '.[fast]'
	@# Byte-compiled on both cores instead of by pip on one (its compile was half of set-up: 50 s -> 25 s). Not
	@# left to first imports: with PYTHONDONTWRITEBYTECODE set (as on these machines) every stage would recompile torch.
	@# Some packages ship files that do not compile (templates, other Pythons' fixtures); pip skips them too.
	$(BIN)/python -m compileall -q -j 0 \
	  $$($(BIN)/python -c 'import sysconfig; p = sysconfig.get_paths(); print(*{p["purelib"], p["platlib"]})') \
	  >/dev/null || true
	touch $(STAMP)

$(TESTSTAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,fast,ray,s3]'
	touch $(TESTSTAMP)

repro: setup
	dvc repro

test: setup $(TESTSTAMP)
	python -m pytest -q

# One table of every performance ratio (bench/README.md); BENCH_ARGS=--quick for a smoke run. The other
# bench/*.py scripts (read_speed, augment, train_speed, faults, ...) still run on their own.
bench: setup
	python bench/report.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data results .pytest_cache
