"""The pack inside the real ComfyUI server: node registration and shared workflows over HTTP."""
import io

import pytest
from PIL import Image

from conftest import load_workflow
from fastdit.testing.server import execution_error

pytestmark = pytest.mark.server


def test_object_info_lists_pack_nodes(comfy_server):
    info = comfy_server.get("/object_info")
    assert info["FastDiTCompare"]["display_name"] == "Compare images (PSNR/SSIM)"
    assert info["FastDiTCompare"]["category"] == "FastDiT/analysis"
    assert "FastDiTTestModel" in info


def test_compare_workflow_runs_over_http(comfy_server):
    entry = comfy_server.run(load_workflow("compare_images_api.json"))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    metrics = entry["outputs"]["6"]["fastdit_metrics"][0]
    assert 5 < float(metrics["psnr"]) < 80 and 0 < metrics["ssim"] < 1
    saved = entry["outputs"]["7"]["images"][0]
    img = Image.open(io.BytesIO(comfy_server.view(saved)))
    assert img.size == (64, 64)  # 32x32 latent, 2x2 patches


def test_invalid_graph_is_rejected_with_node_errors(comfy_server):
    graph = load_workflow("compare_images_api.json")
    del graph["1"]["inputs"]["width"]   # every output depends on node 1
    status, resp = comfy_server.queue(graph)
    assert status == 400 and "1" in resp["node_errors"]


def test_unknown_family_names_the_known_ones(comfy_server):
    graph = load_workflow("compare_images_api.json")
    graph["1"]["inputs"]["family"] = "sdxl"
    status, resp = comfy_server.queue(graph)     # refused before it runs, naming the known families
    assert status == 400
    messages = [e["details"] for e in resp["node_errors"]["1"]["errors"]]
    assert messages and all("family must be one of flux, flux_kontext" in m and "'sdxl'" in m for m in messages)


def test_node_error_reaches_the_user(comfy_server):
    graph = load_workflow("compare_images_api.json")
    graph["9"] = {"class_type": "ImageScale", "inputs": {"image": ["5", 0], "upscale_method": "nearest-exact",
                                                        "width": 40, "height": 64, "crop": "disabled"}}
    graph["6"]["inputs"]["candidate"] = ["9", 0]
    entry = comfy_server.run(graph)
    err = execution_error(entry)
    assert entry["status"]["status_str"] == "error" and err["node_type"] == "FastDiTCompare"
    assert "differ in size" in err["exception_message"]
