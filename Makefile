# `make quickstart` and `make test` do all the set-up themselves (they create .venv first).
VENV := .venv
PY := $(VENV)/bin/python
# The CUDA build of torch 2.14.1 is the one this project's machines carry on disk.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install browser test test-fast quickstart clean

$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Debian's chromium, for the web demo's browser test (installed as root; without it the test says why it skips)
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } \
		|| echo "chromium not installed (not root, or no Debian mirror): the browser test will be skipped"

test: install browser
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests

# in-process tests only (no process launched, no browser): about a minute on 2 cores
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow and not multiprocess and not browser" tests

quickstart: install
	$(PY) -m video_llama.cli.quickstart

clean:
	rm -rf $(VENV) output
