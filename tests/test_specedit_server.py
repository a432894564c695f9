"""SpecEdit draft -> verify inside the real ComfyUI: the executor in-process and the server over
HTTP (both tiny edit families, the shared demo-kontext workflow, the errors users see)."""
import io
import os

import pytest
from PIL import Image

from conftest import load_workflow
from fastdit.testing.comfy_env import GraphError, execute
from fastdit.testing.server import execution_error

FAMILIES = ["flux_kontext", "qwen_image_edit"]


def _graph(family, size=24, mask=True):
    """Test model -> draft -> verify (mask override: one painted square) -> decode -> save."""
    g = {
        "1": {"class_type": "FastDiTTestModel", "inputs": {"family": family, "seed": 0, "width": size, "height": size,
                                                           "frames": 1, "batch_size": 1}},
        "2": {"class_type": "FastDiTSpecEditDraft", "inputs": {
            "model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2], "latent": ["1", 3], "vae": ["1", 4],
            "seed": 1, "steps": 8, "cfg": 2.0, "scheduler": "simple", "draft_fraction": 0.5, "coarse_factor": "2",
            "discrepancy": "latent"}},
        "3": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 2 * size, "height": 2 * size}},
        "4": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 16, "height": 16}},
        "5": {"class_type": "MaskComposite", "inputs": {"destination": ["3", 0], "source": ["4", 0], "x": 8, "y": 8,
                                                        "operation": "add"}},
        "6": {"class_type": "FastDiTSpecEditVerify", "inputs": {
            "model": ["1", 0], "draft": ["2", 0], "threshold": 0.5, "budget": 0.0, "coverage_stride": 0,
            "dilation": 1, "boundary_blend": 0.8, "positions": "fine", "mask": ["5", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 4]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "specedit_test"}},
        "9": {"class_type": "MaskPreview", "inputs": {"mask": ["6", 1]}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    }
    if not mask:
        del g["6"]["inputs"]["mask"]
    return g


def _error(graph):
    with pytest.raises(GraphError) as e:
        execute(graph)
    return str(e.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_pair_runs_in_the_executor(family):
    out = execute(_graph(family))
    assert out["8"]["images"] and out["9"]["images"] and out["10"]["images"]


def test_errors_reach_the_user_in_the_executor():
    g = _graph("flux")                                        # FLUX without a reference image
    assert "reference latent in the positive conditioning" in _error(g)
    g = _graph("wan")
    assert "FLUX.1 Kontext and Qwen-Image-Edit" in _error(g)
    g = _graph("flux_kontext")
    g["11"] = {"class_type": "FastDiTTestModel", "inputs": {"family": "flux_kontext", "seed": 0, "width": 16,
                                                             "height": 24, "frames": 1, "batch_size": 1}}
    g["2"]["inputs"]["latent"] = ["11", 3]                    # a latent of another size than the reference
    assert "latent must have the reference's size" in _error(g)
    g = _graph("flux_kontext")
    g["11"] = {"class_type": "FastDiTTestModel", "inputs": {"family": "flux_kontext", "seed": 5, "width": 24,
                                                             "height": 24, "frames": 1, "batch_size": 1}}
    g["6"]["inputs"]["model"] = ["11", 0]                     # verify with another model than the draft's
    assert "another model than its draft" in _error(g)


def _files(root):
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


@pytest.mark.server
@pytest.mark.parametrize("family", FAMILIES)
def test_pair_runs_over_http_and_writes_only_outputs(comfy_server, family):
    before = _files(comfy_server.base)
    entry = comfy_server.run(_graph(family))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    saved = entry["outputs"]["8"]["images"][0]
    assert Image.open(io.BytesIO(comfy_server.view(saved))).size == (48, 48)
    new = _files(comfy_server.base) - before
    assert new and all(p.split(os.sep)[0] in ("output", "temp") or p == "server.log" for p in new), sorted(new)


@pytest.mark.server
def test_draft_from_another_model_is_an_error_over_http(comfy_server):
    g = _graph("qwen_image_edit")
    g["11"] = {"class_type": "FastDiTTestModel", "inputs": {"family": "qwen_image_edit", "seed": 7, "width": 24,
                                                             "height": 24, "frames": 1, "batch_size": 1}}
    g["6"]["inputs"]["model"] = ["11", 0]
    entry = comfy_server.run(g)
    err = execution_error(entry)
    assert entry["status"]["status_str"] == "error" and err["node_type"] == "FastDiTSpecEditVerify"
    assert "another model than its draft" in err["exception_message"]


@pytest.mark.server
def test_specedit_workflow_runs_over_http(comfy_server):
    """demo-kontext, 32x32 latent, 10 steps: the locked region decodes to the source (the demo VAE
    is exact up to float rounding), the unedited region stays close to it, the edit is close to the
    exact one."""
    entry = comfy_server.run(load_workflow("specedit_kontext_api.json"))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    locked = entry["outputs"]["19"]["fastdit_metrics"][0]["psnr"]
    assert locked == "inf" or float(locked) > 80
    assert float(entry["outputs"]["16"]["fastdit_metrics"][0]["psnr"]) > 30
    assert float(entry["outputs"]["17"]["fastdit_metrics"][0]["psnr"]) > 18
    saved = entry["outputs"]["12"]["images"][0]
    assert Image.open(io.BytesIO(comfy_server.view(saved))).size == (64, 64)
