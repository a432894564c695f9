"""FastDiTCompare executed by ComfyUI's own executor (in-process)."""
import pytest
import torch

from fastdit.testing.comfy_env import GraphError, execute


def _graph(w2=32, steps2=10):
    return {
        "1": {"class_type": "FastDiTTestModel", "inputs": {"family": "flux", "seed": 0, "width": 16, "height": 16, "frames": 1, "batch_size": 2}},
        "2": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["1", 3], "seed": 1, "steps": 8, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["1", 3], "seed": 1, "steps": steps2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 4]}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 4]}},
        "6": {"class_type": "ImageScale", "inputs": {"image": ["5", 0], "upscale_method": "nearest-exact", "width": w2, "height": 32, "crop": "disabled"}},
        "7": {"class_type": "FastDiTCompare", "inputs": {"reference": ["4", 0], "candidate": ["6", 0]}},
    }


def test_same_graph_compares_identical_runs_as_identical():
    out = execute(_graph(steps2=8))["7"]
    m = out["fastdit_metrics"][0]
    assert m["psnr"] == "inf" and m["ssim"] == pytest.approx(1.0)
    assert "PSNR inf dB" in out["text"][0] and "over 2 images" in out["text"][0]


def test_fewer_steps_give_finite_psnr():
    m = execute(_graph(steps2=4))["7"]["fastdit_metrics"][0]
    assert 0 < float(m["psnr"]) < 80 and 0 < m["ssim"] < 1
    assert len(m["psnr_per_image"]) == 2
    assert m["nonfinite_per_image"] == [{"reference": 0, "candidate": 0, "near_mask": 0, "outside_mask": 0}] * 2


def test_mismatched_sizes_give_a_clear_error():
    with pytest.raises(GraphError, match="images differ in size.*resize one of them"):
        execute(_graph(w2=40))


def test_masked_compare_via_node_class(pack_nodes):
    node = pack_nodes["FastDiTCompare"]
    ref = torch.rand(1, 16, 16, 3)
    cand = ref.clone()
    cand[:, 8:] = 0
    mask = torch.zeros(1, 16, 16)
    mask[:, :8] = 1
    res = node.execute(reference=ref, candidate=cand, mask=mask)
    report, psnr, ssim, heat = res.args
    _, psnr_all, ssim_all, _ = node.execute(reference=ref, candidate=cand).args
    # PSNR is exact per pixel; SSIM's 11-px window sees across the mask edge, so it is only higher
    assert psnr == float("inf") and psnr_all < 30 and "(masked)" in report
    assert ssim_all < ssim < 1
    assert heat.shape == (1, 16, 16, 3)
