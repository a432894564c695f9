"""The shared HiCache workflow through the real ComfyUI server (HTTP /prompt)."""
import copy
import io
import re

import pytest
from PIL import Image

from conftest import load_workflow
from fastdit.testing.server import execution_error

pytestmark = pytest.mark.server


def test_object_info_lists_hicache(comfy_server):
    info = comfy_server.get("/object_info")["FastDiTHiCache"]
    assert info["display_name"] == "HiCache (Hermite feature forecast)" and info["category"] == "FastDiT/caching"
    required = info["input"]["required"]
    assert required["mode"][1]["options"] == ["hicache", "hi-taylor", "taylorseer", "reuse"]
    assert required["interval"][1]["default"] == 7 and required["sigma"][1]["default"] == 0.5
    assert "cache_device" in info["input"]["optional"]


def test_hicache_workflow_runs_over_http(comfy_server):
    entry = comfy_server.run(load_workflow("hicache_flux_api.json"))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    metrics = entry["outputs"]["7"]["fastdit_metrics"][0]
    assert metrics["psnr"] != "inf" and 10 < float(metrics["psnr"]) < 80  # forecast: close, not identical
    img = Image.open(io.BytesIO(comfy_server.view(entry["outputs"]["8"]["images"][0])))
    assert img.size == (64, 64)
    # one log line per run: speed auto at 28 steps is N=4, warm-up 2 -> full at 0, 1, 5, 9, 13, 17, 21, 25
    lines = re.findall(r"HiCache \(hicache, speed auto.*", comfy_server.log())
    assert lines and "28 model evaluations = 8 full + 20 forecast; cost ratio 3.50x" in lines[-1]


def test_bad_option_is_reported_by_the_node(comfy_server):
    graph = copy.deepcopy(load_workflow("hicache_flux_api.json"))
    graph["2"]["inputs"]["start_percent"] = 0.9
    graph["2"]["inputs"]["end_percent"] = 0.1
    err = execution_error(comfy_server.run(graph))
    assert err["node_type"] == "FastDiTHiCache" and "start_percent <= end_percent" in err["exception_message"]
