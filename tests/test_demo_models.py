"""Demo model construction, safetensors round trip, and sampling through ComfyUI's KSampler path."""
import pytest
import torch

import comfy.sample
from demo import models, text
from fastdit.adapters import for_model
from fastdit.metrics import FlopCounter


@pytest.fixture(scope="module")
def fresh():
    m = models.new(seed=3)
    with torch.no_grad():  # non-trivial weights everywhere (new() zero-initialises gates and the output)
        for p in list(m.diffusion_model.parameters()) + list(m.position.parameters()):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.02)
    return m


def _sample(patcher, demo, prompt, size=8, steps=3, cfg=2.0, ref=None):
    pos, neg = demo.conditioning(prompt), demo.conditioning("")
    if ref is not None:
        pos = [[c, {**e, "reference_latents": [ref]}] for c, e in pos]
        neg = [[c, {**e, "reference_latents": [ref]}] for c, e in neg]
    lat = torch.zeros(1, 16, size, size)
    noise = comfy.sample.prepare_noise(lat, 0)
    return comfy.sample.sample(patcher, noise, steps, cfg, "euler", "simple", pos, neg, lat, disable_pbar=True)


def test_demo_model_is_a_flux_model_within_the_size_budget(fresh):
    patcher = fresh.patcher()
    assert for_model(patcher).family == "flux"
    n = sum(p.numel() for p in fresh.diffusion_model.parameters())
    assert n * 2 < 15e6  # bf16 file under 15 MB, so demo-flux + demo-kontext ship under 30 MB
    assert len(fresh.diffusion_model.double_blocks) == 2 and len(fresh.diffusion_model.single_blocks) == 4


def test_save_load_round_trip_samples_the_same(fresh, tmp_path):
    path = tmp_path / "m.safetensors"
    fresh.save(str(path), dtype=torch.float32, note="test")
    back = models.load(str(path), dtype=torch.float32)
    assert back.metadata["note"] == "test" and back.config == fresh.config
    prompt = "a red circle at the top left, on a white background"
    a = _sample(fresh.patcher(), fresh, prompt)
    b = _sample(back.patcher(), back, prompt)
    assert torch.allclose(a, b, atol=1e-5)


def test_position_patch_and_prompt_change_the_sample(fresh):
    patcher = fresh.patcher()
    a = _sample(patcher, fresh, "a red circle at the top left, on a white background")
    b = _sample(patcher, fresh, "a red circle at the bottom right, on a white background")
    assert not torch.allclose(a, b)
    plain = fresh.patcher()
    plain.model_options["transformer_options"]["patches"].pop("post_input")
    c = _sample(plain, fresh, "a red circle at the top left, on a white background")
    assert not torch.allclose(a, c)


def test_kontext_reference_is_appended_as_tokens(fresh):
    counter = FlopCounter(fresh.patcher())
    ref = torch.randn(1, 16, 8, 8)
    _sample(counter.install(fresh.patcher()), fresh, "make the circle blue", steps=1, ref=ref)
    with_ref = counter.flops
    counter.reset()
    _sample(counter.install(fresh.patcher()), fresh, "make the circle blue", steps=1)
    assert with_ref > 1.5 * counter.flops


def test_unknown_demo_model_is_named():
    with pytest.raises(ValueError, match="available: demo-flux, demo-kontext"):
        models.weights_path("demo-sdxl")


def test_context_width_matches_the_text_encoder(fresh):
    assert fresh.config["context_in_dim"] == fresh.config["vec_in_dim"] == text.EMBED_DIM


@pytest.mark.parametrize("name", ["demo-flux", "demo-kontext"])
def test_evaluation_script_scores_and_draws(name, tmp_path):
    from demo import evaluate
    grid = tmp_path / "grid.png"
    rows = evaluate.evaluate(name, n_prompts=2, sizes=[8], steps=2, cfg=3.0, grid=str(grid), grid_count=2)
    assert rows[0]["size"] == 8 and 0 <= rows[0]["shape_accuracy"] <= rows[0]["scene_accuracy"] <= 1
    assert ("unedited_psnr" in rows[0]) == (name == "demo-kontext")
    from PIL import Image
    assert Image.open(grid).size[0] >= (2 if name == "demo-flux" else 3) * 96


def test_open_evaluation_rows_and_the_blur_yardstick_on_the_samples(tmp_path):
    from demo import evaluate, models
    grid = tmp_path / "open.png"
    rows = evaluate.evaluate_open(models.load("demo-flux-open"), n_prompts=2, sizes=[8], steps_list=[3, 2], cfg=3.0,
                                  two_seeds=True, grid=str(grid), grid_count=2)
    yard = [r for r in rows if "steps" not in r]
    assert [r["images"] for r in yard] == ["renders", "renders, 1 px blur", "average of 2 renders"]
    sampled = {r["steps"]: r for r in rows if "steps" in r and "images" not in r}
    blurred = next(r for r in rows if r.get("images") == "1 px blur")
    assert sorted(sampled) == [2, 3] and sampled[3]["psnr_vs_most_steps"] == float("inf")
    assert sampled[2]["psnr_vs_most_steps"] < 60 and "two_seed_psnr" in sampled[3]
    assert blurred["steps"] == 3 and blurred["detail_db"] < sampled[3]["detail_db"] - 1.0
    from PIL import Image
    assert Image.open(grid).size[0] >= 3 * 96
