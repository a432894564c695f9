"""The demo nodes in ComfyUI's executor (in-process) and the demo workflows over HTTP."""
import io
import os

import pytest
import torch
from PIL import Image

from conftest import load_workflow
from demo import world
from fastdit.testing.comfy_env import GraphError, execute
from fastdit.testing.server import execution_error

PROMPT = "a large red circle at the top left, a small blue square at the center, on a white background"


def _graph(prompt=PROMPT, steps=4):
    return {
        "1": {"class_type": "FastDiTDemoLoader", "inputs": {"model_name": "demo-flux"}},
        "2": {"class_type": "FastDiTDemoTextEncode", "inputs": {"model_name": "demo-flux", "prompt": prompt}},
        "3": {"class_type": "FastDiTDemoTextEncode", "inputs": {"model_name": "demo-flux", "prompt": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 96, "batch_size": 2}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": 1, "steps": steps, "cfg": 3.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 1]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }


def test_standard_graph_samples_the_demo_model():
    out = execute(_graph())
    imgs = out["7"]["images"]
    assert len(imgs) == 2  # EmptyLatentImage 128x96 -> 16x12 latent -> 32x24 pixels
    from fastdit.testing import comfy_env  # noqa: F401
    import folder_paths
    path = os.path.join(folder_paths.get_temp_directory(), imgs[0].get("subfolder", ""), imgs[0]["filename"])
    assert Image.open(path).size == (32, 24)


def test_bad_prompt_is_rejected_naming_the_vocabulary():
    with pytest.raises(GraphError, match="cannot read the object 'a pink elephant at the top'.*colours red"):
        execute(_graph("a pink elephant at the top, on a white background"))


def test_scene_node_draws_prompt_edit_and_mask(pack_nodes):
    node = pack_nodes["FastDiTDemoScene"]
    image, edited, mask = node.execute(prompt=PROMPT, width=48, height=32, edit="remove the square").args
    scene = world.parse(PROMPT)
    assert image.shape == (1, 32, 48, 3) and torch.equal(image, world.render(scene, 32, 48))
    assert torch.equal(edited, world.render(world.parse_edit("remove the square").apply(scene), 32, 48))
    assert mask.shape == (1, 32, 48) and torch.equal(mask[0] == 1, (image - edited).abs().amax(-1)[0] < 1e-6)
    assert node.validate_inputs(prompt=PROMPT, edit="remove the triangle").startswith("'remove the triangle' needs")


@pytest.mark.server
def test_demo_flux_workflow_over_http(comfy_server):
    entry = comfy_server.run(load_workflow("demo_flux_api.json"))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    for node in ("7", "11", "16", "20"):  # baseline, EasyCache, HiCache, Fresco
        img = Image.open(io.BytesIO(comfy_server.view(entry["outputs"][node]["images"][0])))
        assert img.size == (64, 64)
    psnr = {name: float(entry["outputs"][node]["fastdit_metrics"][0]["psnr"])
            for name, node in (("easycache", "12"), ("hicache", "17"), ("fresco", "21"))}
    print("demo_flux workflow PSNR vs baseline:", psnr)
    # HiCache forecasts the 50-step trajectory closely; Fresco (18 steps, a coarse sketch first) is a
    # different sample of the same prompt: close in content, further in pixels.
    assert psnr["hicache"] > 26 and psnr["easycache"] > 30
    assert 18 < psnr["fresco"] < psnr["hicache"]


@pytest.mark.server
def test_demo_kontext_workflow_over_http(comfy_server):
    entry = comfy_server.run(load_workflow("demo_kontext_api.json"))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    img = Image.open(io.BytesIO(comfy_server.view(entry["outputs"]["11"]["images"][0])))
    assert img.size == (64, 64)
    unedited = entry["outputs"]["12"]["fastdit_metrics"][0]
    assert "(masked)" in entry["outputs"]["12"]["text"][0] and float(unedited["psnr"]) > 0


def test_sampler_custom_advanced_graph_runs_on_demo_kontext():
    g = {
        "1": {"class_type": "FastDiTDemoLoader", "inputs": {"model_name": "demo-kontext"}},
        "2": {"class_type": "FastDiTDemoScene", "inputs": {"prompt": PROMPT, "width": 32, "height": 32, "edit": ""}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 1]}},
        "4": {"class_type": "FastDiTDemoTextEncode", "inputs": {"model_name": "demo-kontext", "prompt": "remove the square"}},
        "5": {"class_type": "FastDiTDemoTextEncode", "inputs": {"model_name": "demo-kontext", "prompt": ""}},
        "6": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["4", 0], "latent": ["3", 0]}},
        "7": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["5", 0], "latent": ["3", 0]}},
        "8": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["6", 0], "negative": ["7", 0], "cfg": 3.0}},
        "9": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "11": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 4, "denoise": 1.0}},
        "12": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["9", 0], "guider": ["8", 0], "sampler": ["10", 0],
                                                                "sigmas": ["11", 0], "latent_image": ["3", 0]}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["1", 1]}},
        "14": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}},
    }
    assert len(execute(g)["14"]["images"]) == 1
