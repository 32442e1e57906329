# `make quickstart` and `make test` do all the set-up themselves (they create .venv first).
VENV := .venv
PY := $(VENV)/bin/python
# The CUDA build of torch 2.14.1 is the one this project's machines carry on disk.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install test quickstart clean

$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests

quickstart: install
	$(PY) -m video_llama.cli.quickstart

clean:
	rm -rf $(VENV) output
