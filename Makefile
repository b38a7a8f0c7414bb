# The two commands of the README: `make demo` (main job) and `make test`.
# Both create or refresh .venv from nothing; torch is pinned first to the CPU build.
# `make test` also builds .venv-sam (the AWS SAM CLI in a venv of its own: its pins clash with ours).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SAM_VENV := .venv-sam
SAM      := $(SAM_VENV)/bin/sam
SAM_VERSION := 1.170.0

.PHONY: demo test bench venv sam clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,cli,server,plot,test]'
	touch $(STAMP)

sam: $(SAM)

$(SAM): Makefile
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==$(SAM_VERSION)
	touch $(SAM)

demo: $(STAMP)
	$(VENV)/bin/signalcraft demo

test: $(STAMP) $(SAM)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(SAM_VENV) build *.egg-info
