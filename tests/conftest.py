"""Test bed: the real ComfyUI (vendored v0.3.75 or $COMFYUI_ROOT) booted in this process on CPU,
with this pack loaded by ComfyUI's own custom-node loader; plus a real server for HTTP tests."""
import json
import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from fastdit.testing import comfy_env  # noqa: E402

_BASE = tempfile.mkdtemp(prefix="fastdit-tests-")
PACK_NODES = comfy_env.boot(base_directory=_BASE)  # before any test module imports comfy

# Tiny models run fastest on one thread; on a busy 2-core machine OpenMP's spinning threads make
# them orders of magnitude slower.
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; deselected by default, run with -m slow or make test-all")
    config.addinivalue_line("markers", "server: starts the real ComfyUI server (main.py) over HTTP")


@pytest.fixture(scope="session")
def pack_nodes():
    return PACK_NODES


@pytest.fixture(scope="session")
def comfy_server():
    from fastdit.testing.server import ComfyServer
    srv = ComfyServer()
    srv.start()
    yield srv
    srv.cleanup()


def load_workflow(name):
    with open(os.path.join(ROOT, "tests", "workflows", name)) as f:
        return json.load(f)
