# Two commands do all set-up on a fresh machine:
#   make demo   - run the shared workflows through the real ComfyUI server, then the demo-model bench
#   make test   - run the test suite (the fast default set, real ComfyUI included)
# and one more runs the suite on the other ComfyUI versions the pack supports:
#   make test-versions - the suite against each ComfyUI source archive in $(COMFYUI_ARCHIVES)
#   make test-slow     - the slow tests (torch.compile per preset, the server soak) on the default ComfyUI
VENV ?= .venv
PY := $(VENV)/bin/python
COMFYUI_ARCHIVES ?= ../shared/comfyui

.PHONY: demo test test-slow test-all test-versions bench env clean-env

$(VENV)/.fastdit-setup-v2:
	VENV=$(VENV) bash scripts/setup_env.sh

env: $(VENV)/.fastdit-setup-v2

demo: env
	$(PY) -m demo.run

test: env
	$(PY) -m pytest -q

test-slow: env
	$(PY) -m pytest -q -m slow

test-all: env
	$(PY) -m pytest -q -m ""

test-versions: env
	VENV=$(VENV) COMFYUI_ARCHIVES=$(COMFYUI_ARCHIVES) bash scripts/test_versions.sh

clean-env:
	rm -rf $(VENV) .versions
