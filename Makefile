# Two commands do all set-up on a fresh machine:
#   make demo   - run the shared workflows through the real ComfyUI server, then the demo-model bench
#   make test   - run the test suite (the fast default set, real ComfyUI included)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-all bench env clean-env

$(VENV)/.fastdit-setup-v1:
	VENV=$(VENV) bash scripts/setup_env.sh

env: $(VENV)/.fastdit-setup-v1

demo: env
	$(PY) -m demo.run

test: env
	$(PY) -m pytest -q

test-all: env
	$(PY) -m pytest -q -m ""

clean-env:
	rm -rf $(VENV)
