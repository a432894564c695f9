"""The FLOP counter (fastdit.metrics cost accounting) against a hand count and torch's own counter."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import comfy.sample
from fastdit.metrics import FlopCounter, attention_flops
from fastdit.testing import tiny_models as tm


def _sample(model, steps=2, size=16, cfg=1.0, family="flux"):
    pos, neg = tm.conditioning(family, 1), tm.conditioning(family, 2)
    lat = torch.zeros(tm.latent_shape(family, size, size))
    return comfy.sample.sample(model, torch.randn(lat.shape, generator=torch.Generator().manual_seed(0)), steps, cfg,
                               "euler", "simple", pos, neg, lat, disable_pbar=True)


def flux_hand_count(img_tokens, txt_tokens=8, batch=1):
    """FLOPs of one call of the tiny FLUX config, counted by hand from its dimensions:
    hidden d=64, mlp ratio 2, 2 heads of 32, 2 double + 2 single blocks, context 64, pooled 32,
    16 latent channels with 2x2 patches (64 per token)."""
    d, n = 64, img_tokens + txt_tokens
    double_per_token = 3 * d * d + d * d + 2 * (d * 2 * d)          # qkv, proj, mlp in+out (one stream)
    single_per_token = d * (3 * d + 2 * d) + (d + 2 * d) * d          # linear1 (qkv+mlp), linear2
    double_mod, single_mod = 2 * 6 * d * d, 3 * d * d                 # img_mod + txt_mod, modulation
    blocks = 2 * (n * double_per_token + double_mod) + 2 * (n * single_per_token + single_mod)
    embed = img_tokens * (64 * d + d * 64) + txt_tokens * (64 * d)     # img_in, final linear, txt_in
    embed += (256 * d + d * d) * 2 + (32 * d + d * d) + d * 2 * d     # time_in, guidance_in, vector_in, final adaLN
    attention = 4 * 2 * n * n * 32 * 4                                 # 4 blocks, 2 heads, head dim 32
    return batch * (2 * (blocks + embed)) + batch * attention


def test_attention_flops_formula():
    assert attention_flops(2, 3, 5, 7, 11) == 4 * 2 * 3 * 5 * 7 * 11


def test_flux_call_matches_hand_count_and_torch_flop_counter():
    model = tm.make_model("flux")
    counter = FlopCounter(model)
    counted = counter.install(model)
    with FlopCounterMode(display=False) as torch_count:
        _sample(counted, steps=3)
    assert counter.model_calls == 3
    assert counter.flops == 3 * flux_hand_count(64)
    # torch counts the matrix products of the linear layers (its CPU SDPA has no FLOP formula)
    assert counter.parts["blocks"] + counter.parts["embedders"] == torch_count.get_total_flops()
    assert counter.parts["attention"] == 3 * 4 * attention_flops(1, 2, 72, 72, 32)


def test_cfg_doubles_the_batch_and_the_count():
    model = tm.make_model("flux")
    counter = FlopCounter(model)
    _sample(counter.install(model), steps=2, cfg=2.0)
    assert counter.flops == 2 * flux_hand_count(64, batch=2)


def test_a_skipped_block_costs_nothing_and_references_cost_tokens():
    model = tm.make_model("flux")
    skip = model.clone()
    skip.set_model_patch_replace(lambda args, extra: args, "dit", "single_block", 1)  # block does not run
    counter = FlopCounter(model)
    _sample(counter.install(skip), steps=1)
    d, n = 64, 72
    single = 2 * (n * 8 * d * d + 3 * d * d) + attention_flops(1, 2, n, n, 32)
    assert counter.flops == flux_hand_count(64) - single

    counter.reset()
    ref = tm.reference_latent("flux", 16, 16)
    pos = tm.conditioning("flux", 1, reference=ref)
    lat = torch.zeros(tm.latent_shape("flux", 16, 16))
    comfy.sample.sample(counter.install(model), torch.randn(lat.shape), 1, 1.0, "euler", "simple", pos, pos, lat,
                        disable_pbar=True)
    assert counter.flops == flux_hand_count(128)  # 64 target + 64 reference tokens


def test_existing_attention_override_is_chained():
    model = tm.make_model("flux").clone()
    seen = []

    def override(func, *args, **kwargs):
        seen.append(args[0].shape)
        return func(*args, **kwargs)
    model.model_options["transformer_options"]["optimized_attention_override"] = override
    counter = FlopCounter(model)
    _sample(counter.install(model), steps=1)
    assert len(seen) == 4 and counter.flops == flux_hand_count(64)


@pytest.mark.parametrize("family", ["qwen_image", "wan", "hunyuan_video"])
def test_other_families_count_blocks_and_attention(family):
    model = tm.make_model(family)
    counter = FlopCounter(model)
    _sample(counter.install(model), steps=1, family=family)
    n_blocks = len(counter.blocks)
    assert counter.model_calls == 1 and counter.parts["attention"] > 0
    # every block's linear layers were counted once for at least the 64 image tokens
    assert counter.parts["blocks"] >= 2 * 64 * n_blocks * min(c.token_macs for c in counter.blocks.values())
