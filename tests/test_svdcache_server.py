"""SVD-Cache through the real ComfyUI server (HTTP /prompt) and on the trained demo-flux model."""
import copy
import re

import pytest

from fastdit.testing.comfy_env import execute
from fastdit.testing.server import execution_error
from test_svdcache import _graph

PROMPT = "a large red circle at the top left, a small blue square at the center, on a white background"


@pytest.mark.server
def test_object_info_lists_both_nodes(comfy_server):
    info = comfy_server.get("/object_info")
    cal, node = info["FastDiTSVDCacheCalibrate"], info["FastDiTSVDCache"]
    assert cal["display_name"] == "SVD-Cache calibrate (one-time basis)" and cal["category"] == "FastDiT/caching"
    assert cal["output"] == ["SVD_BASIS", "LATENT"]
    assert cal["input"]["required"]["tau"][1]["max"] == 1.0 and cal["input"]["required"]["tau"][1]["default"] == 0.85
    assert node["display_name"] == "SVD-Cache (subspace feature forecast)"
    assert node["input"]["optional"]["basis"][0] == "SVD_BASIS"
    assert node["input"]["required"]["ema_mode"][1]["options"] == ["trend", "level", "holt"]


@pytest.mark.server
def test_calibrate_and_patch_over_http(comfy_server):
    graph = _graph("qwen_image")
    graph["9"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "svdcache"}}
    entry = comfy_server.run(graph)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    psnr = entry["outputs"]["8"]["fastdit_metrics"][0]["psnr"]
    assert psnr != "inf" and 10 < float(psnr) < 80
    log = comfy_server.log()
    assert re.search(r"SVD-Cache calibration: 8 slots from 4 full steps of 12", log)
    lines = re.findall(r"SVD-Cache \(trend, N=4.*", log)
    assert lines and "12 model evaluations = 4 full + 8 forecast; cost ratio 3.00x" in lines[-1]


@pytest.mark.server
def test_bad_basis_is_reported_by_the_node(comfy_server):
    graph = copy.deepcopy(_graph("flux"))
    graph["1b"] = {"class_type": "FastDiTTestModel", "inputs": {"family": "wan", "seed": 0, "width": 16, "height": 16,
                                                                "frames": 3, "batch_size": 1}}
    graph["3"]["inputs"]["model"] = ["1b", 0]
    err = execution_error(comfy_server.run(graph))
    assert err["node_type"] == "FastDiTSVDCache"
    assert "calibrated on a flux model, this model is wan" in err["exception_message"]


def test_demo_flux_calibrate_and_patch():
    """The trained demo model: calibrate at one size, sample at another, compare to the uncached run."""
    def ksampler(model, latent):
        return {"class_type": "KSampler", "inputs": {"model": [model, 0], "positive": ["2", 0], "negative": ["3", 0],
                                                     "latent_image": [latent, 0], "seed": 1, "steps": 20, "cfg": 3.0,
                                                     "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    graph = {
        "1": {"class_type": "FastDiTDemoLoader", "inputs": {"model_name": "demo-flux"}},
        "2": {"class_type": "FastDiTDemoTextEncode", "inputs": {"model_name": "demo-flux", "prompt": PROMPT}},
        "3": {"class_type": "FastDiTDemoTextEncode", "inputs": {"model_name": "demo-flux", "prompt": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "4b": {"class_type": "EmptyLatentImage", "inputs": {"width": 192, "height": 160, "batch_size": 1}},
        "5": {"class_type": "FastDiTSVDCacheCalibrate", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["4", 0], "steps": 20, "cfg": 3.0, "seed": 0, "interval": 5, "tau": 0.85}},
        "6": {"class_type": "FastDiTSVDCache", "inputs": {"model": ["1", 0], "basis": ["5", 0], "interval": 5, "beta": 0.3, "ema_mode": "trend", "warmup_steps": 3, "start_percent": 0.0, "end_percent": 1.0}},
        "7": ksampler("1", "4b"),
        "8": ksampler("6", "4b"),
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 1]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 1]}},
        "11": {"class_type": "FastDiTCompare", "inputs": {"reference": ["9", 0], "candidate": ["10", 0]}},
    }
    psnr = float(execute(graph)["11"]["fastdit_metrics"][0]["psnr"])
    assert 22 < psnr < 80   # 20 steps, N=5: 3 warm-up + 4 full steps; close to the uncached image, not equal
