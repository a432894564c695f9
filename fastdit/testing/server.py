"""Run the real ComfyUI server (main.py) on CPU with this pack, and execute API-format graphs.

Used by the tests and by `make demo`. The server gets an isolated base directory (models,
custom_nodes, input, output, temp, user) and is always stopped by its PID.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from .comfy_env import PACK_DIR, comfyui_root


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """frontend=True serves the real ComfyUI frontend (the installed `comfyui_frontend_package`, found
    by ComfyUI itself); by default the server answers the API only, with an empty web root."""

    def __init__(self, base_dir=None, port=None, extra_args=(), log_path=None, frontend=False):
        self.own_base = base_dir is None
        self.frontend = frontend
        self.base = base_dir or tempfile.mkdtemp(prefix="fastdit-comfy-")
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.log_path = log_path or os.path.join(self.base, "server.log")
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=120):
        for sub in ("custom_nodes", "web_empty", "models", "input", "output", "temp", "user"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        link = os.path.join(self.base, "custom_nodes", "comfyui-fastdit")  # the name a registry install gets
        if not os.path.exists(link):
            os.symlink(PACK_DIR, link)
        web_root = [] if self.frontend else ["--front-end-root", os.path.join(self.base, "web_empty")]
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", self.base, *web_root, "--disable-auto-launch",
               "--database-url", "sqlite:///:memory:", "--disable-api-nodes", "--use-pytorch-cross-attention",
               *self.extra_args]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=comfyui_root(), stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log()}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def cleanup(self):
        self.stop()
        if self.own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-8000:]
        except OSError:
            return ""

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.load(r)

    def post(self, path, obj):
        req = urllib.request.Request(self.url + path, data=json.dumps(obj).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, graph):
        """POST an API-format graph; returns (http_status, response)."""
        return self.post("/prompt", {"prompt": graph, "client_id": "fastdit", "prompt_id": str(uuid.uuid4())})

    def run(self, graph, timeout=600):
        """Execute an API-format graph and return its /history entry (raises on rejection/timeout)."""
        status, resp = self.queue(graph)
        if status != 200:
            raise RuntimeError(f"ComfyUI rejected the graph ({status}): {json.dumps(resp)[:2000]}")
        pid = resp["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                entry = hist[pid]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running the graph:\n{self.log()}")
            time.sleep(0.2)
        raise TimeoutError(f"graph {pid} did not finish in {timeout}s")

    def view(self, image_ref):
        q = urllib.parse.urlencode({k: image_ref[k] for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=30) as r:
            return r.read()


def execution_error(entry):
    """The execution_error message of a /history entry, or None."""
    for event, data in entry.get("status", {}).get("messages", []):
        if event == "execution_error":
            return data
    return None
