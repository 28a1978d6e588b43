# Every target installs what it needs: `make test` and `make demo` work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install test test-fast test-stack demo bench gpu-check serve screenshots fashion-mnist browser clean

install: $(STAMP)

# Re-install only when the project's dependency list changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Real Fashion-MNIST from Debian's package (offline); tells the user what to do without apt.
fashion-mnist:
	@if [ -d $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)); \
	else echo "Fashion-MNIST not found in $(FMNIST): run 'sudo apt-get install dataset-fashion-mnist'," \
		"or set data.root to a folder holding the four *-ubyte(.gz) files"; exit 1; fi

# Debian's chromium for the browser test of the pages the service serves.
browser:
	@command -v chromium >/dev/null || ( command -v apt-get >/dev/null && \
		(apt-get install -y -q chromium >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) ) || \
		echo "chromium not installed: the browser test will fail; install Debian's 'chromium'"

test: $(STAMP) fashion-mnist browser test-stack
	$(PY) -m pytest

# The unit tier (blocks, configs, data, API in process): a few minutes; `make test` runs the slow tier too.
test-fast: $(STAMP) fashion-mnist
	$(PY) -m pytest -m "not slow"

# The compose stack for real: builds the images, brings docker/compose.yaml up (local stand-ins for
# images Docker Hub cannot give), trains a 2-worker DDP job through the service, restarts the
# service mid-job, checks MLflow and S3, then removes all it made. Needs root, or a running engine
# (it installs Debian's docker.io and starts dockerd when none answers). Budget: 25 min on 2 cores.
test-stack: fashion-mnist
	$(PYTHON) -m tests.deploy.stack.run

demo: $(STAMP) fashion-mnist
	$(VENV)/bin/attnlab demo

# Every benchmark runs even if an earlier one misses its bar; the exit status reports any miss.
bench: $(STAMP)
	@status=0; for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || status=1; done; exit $$status

# The GPU check (benchmarks/gpu_check.py, < 8 min on one H200) needs only torch, torchvision, lightning,
# torchmetrics and timm: it runs in a stock CUDA PyTorch image without `make install` (the project's venv
# is used where there is one). GPU_CHECK_ARGS=--smoke runs it on a CPU in seconds.
GPU_PY := $(shell test -x $(PY) && echo $(PY) || echo $(PYTHON))
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

serve: $(STAMP)
	$(VENV)/bin/attnlab serve

# The web page's main views at 1400x900 and 390x844 (PNG files in screenshots/, not committed).
screenshots: $(STAMP) browser
	$(PY) -m service.web.screenshots --out screenshots

clean:
	rm -rf $(VENV) *.egg-info
