"""The Fresco nodes inside the real ComfyUI executor: every supported family, both nodes, the
errors users see, and the shared workflow over HTTP."""
import io

import pytest
from PIL import Image

from conftest import load_workflow
from fastdit.testing.comfy_env import GraphError, execute
from fastdit.testing.server import execution_error

KNOBS = {"preset": "fast", "stage_split": "5/6/7", "coarse_factor": "2", "first_upsample": 0.3,
         "upsample_per_step": 0.1, "selection": "variance", "renoise": "unified", "expansion": "hadamard",
         "transition": "same-t"}


def _graph(family, width=16, height=16, frames=1, denoise=None, **knobs):
    """Test model -> Fresco KSampler and Fresco SAMPLER (SamplerCustomAdvanced) -> compared images.
    `denoise`: the KSampler node's input and BasicScheduler's (None: the node's input left out)."""
    options = dict(KNOBS, **knobs)
    graph = {
        "1": {"class_type": "FastDiTTestModel", "inputs": {"family": family, "seed": 0, "width": width, "height": height,
                                                           "frames": frames, "batch_size": 1}},
        "2": {"class_type": "FastDiTFrescoKSampler", "inputs": {"model": ["1", 0], "positive": ["1", 1],
              "negative": ["1", 2], "latent_image": ["1", 3], "seed": 5, "steps": 9, "cfg": 1.0, "scheduler": "simple",
              **options}},
        "3": {"class_type": "FastDiTFrescoSampler", "inputs": dict(options)},
        "4": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "5": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 9,
                                                         "denoise": 1.0 if denoise is None else denoise}},
        "6": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2],
                                                    "cfg": 1.0}},
        "7": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["4", 0], "guider": ["6", 0], "sampler": ["3", 0],
                                                                "sigmas": ["5", 0], "latent_image": ["1", 3]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 4]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 4]}},
        "10": {"class_type": "FastDiTCompare", "inputs": {"reference": ["8", 0], "candidate": ["9", 0]}},
    }
    if denoise is not None:
        graph["2"]["inputs"]["denoise"] = denoise
    return graph


def test_nodes_are_registered(pack_nodes):
    for node_id, display in (("FastDiTFrescoKSampler", "KSampler (Fresco dynamic resolution)"),
                             ("FastDiTFrescoSampler", "Fresco dynamic-resolution sampler")):
        schema = pack_nodes[node_id].define_schema()
        assert schema.display_name == display and schema.category == "FastDiT/dynamic-resolution"


@pytest.mark.parametrize("family,frames", [("flux", 1), ("flux_kontext", 1), ("qwen_image", 1),
                                           ("qwen_image_edit", 1), ("hunyuan_video", 2)])
def test_both_nodes_sample_every_supported_family_identically(family, frames):
    out = execute(_graph(family, frames=frames))
    metrics = out["10"]["fastdit_metrics"][0]
    assert metrics["psnr"] == "inf" and metrics["ssim"] == pytest.approx(1.0)


def test_denoise_is_the_last_input_and_defaults_to_one(pack_nodes):
    """Saved workflows keep their widget values (a new last widget shifts none) and API prompts
    without it sample as before."""
    inputs = pack_nodes["FastDiTFrescoKSampler"].define_schema().inputs
    last = inputs[-1]
    assert last.id == "denoise" and last.default == 1.0 and (last.min, last.max) == (0.0, 1.0) and last.optional
    without = execute(_graph("flux"))
    with_one = execute(_graph("flux", denoise=1.0))
    assert without["10"]["fastdit_metrics"][0]["psnr"] == with_one["10"]["fastdit_metrics"][0]["psnr"] == "inf"


@pytest.mark.parametrize("denoise", [0.3, 0.75])
def test_ksampler_denoise_runs_the_sigmas_of_basic_scheduler(denoise):
    """The node at denoise d is the SAMPLER over BasicScheduler's sigmas at d, and both sample."""
    graph = _graph("flux", 24, 24, denoise=denoise)
    graph["30"] = {"class_type": "VAEDecode", "inputs": {"samples": ["1", 3], "vae": ["1", 4]}}
    graph["31"] = {"class_type": "FastDiTCompare", "inputs": {"reference": ["30", 0], "candidate": ["8", 0]}}
    out = execute(graph)
    assert out["10"]["fastdit_metrics"][0]["psnr"] == "inf"
    assert out["31"]["fastdit_metrics"][0]["psnr"] != "inf"        # it did sample


def test_custom_knobs_reach_the_sampler():
    a = execute(_graph("flux", 24, 24, preset="custom", stage_split="3/3/3", coarse_factor="4",
                       selection="edge", transition="SNR-matched", expansion="interpolate", renoise="independent"))
    assert a["10"]["fastdit_metrics"][0]["psnr"] == "inf"


def _error(graph):
    with pytest.raises(GraphError) as e:
        execute(graph)
    return str(e.value)


def test_users_get_clear_errors():
    g = _graph("wan")
    assert "Qwen-Image" in _error(g) and "HunyuanVideo" in _error(g)
    g = _graph("flux")
    g["20"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 16, "height": 16}}
    g["21"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["1", 3], "mask": ["20", 0]}}
    g["2"]["inputs"]["latent_image"] = ["21", 0]
    assert "noise_mask" in _error(g)
    g = _graph("flux")
    g["22"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["1", 1], "width": 64, "height": 64,
                                                               "x": 0, "y": 0, "strength": 1.0}}
    g["2"]["inputs"]["positive"] = ["22", 0]
    g["6"]["inputs"]["positive"] = ["22", 0]
    assert "area or mask" in _error(g)
    g = _graph("flux", preset="custom", stage_split="5-6")
    assert "5/6/7" in _error(g)


@pytest.mark.server
def test_fresco_workflow_runs_over_http(comfy_server):
    entry = comfy_server.run(load_workflow("fresco_api.json"))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    vs_full = entry["outputs"]["6"]["fastdit_metrics"][0]
    assert 8 < float(vs_full["psnr"]) < 60 and 0.3 < vs_full["ssim"] < 1        # close to, not equal to, full res
    assert entry["outputs"]["14"]["fastdit_metrics"][0]["psnr"] == "inf"       # SAMPLER == KSampler node
    saved = entry["outputs"]["7"]["images"][0]
    assert Image.open(io.BytesIO(comfy_server.view(saved))).size == (64, 64)   # full resolution out
