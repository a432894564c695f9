"""Tiny models of every supported family sample through comfy.sample on CPU."""
import pytest
import torch

import comfy.sample
from fastdit.testing import tiny_models as tm


def _sample(family, seed=0, steps=3, cfg=2.0, with_reference=True, frames=1):
    model = tm.make_model(family)
    ref = tm.reference_latent(family) if with_reference and family in ("flux_kontext", "qwen_image_edit") else None
    pos, neg = tm.conditioning(family, 0, reference=ref), tm.conditioning(family, 1, reference=ref)
    latent = torch.zeros(tm.latent_shape(family, frames=frames))
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", pos, neg, latent, disable_pbar=True)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_family_samples(family):
    frames = 3 if family in ("hunyuan_video", "wan") else 1
    out = _sample(family, frames=frames)
    assert tuple(out.shape) == tm.latent_shape(family, frames=frames)
    assert torch.isfinite(out).all()
    assert out.std() > 0.1


def test_sampling_is_deterministic_per_seed():
    a, b, c = _sample("flux", seed=1), _sample("flux", seed=1), _sample("flux", seed=2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("family", ["flux_kontext", "qwen_image_edit"])
def test_reference_latents_reach_the_model(family):
    with_ref = _sample(family, with_reference=True)
    without = _sample(family, with_reference=False)
    assert (with_ref - without).abs().max() > 1e-4


def test_weights_are_initialised_not_garbage():
    model = tm.make_model("flux", seed=3)
    params = torch.cat([p.flatten() for p in model.model.diffusion_model.parameters()])
    assert torch.isfinite(params).all() and params.abs().max() < 10
    again = torch.cat([p.flatten() for p in tm.make_model("flux", seed=3).model.diffusion_model.parameters()])
    assert torch.equal(params, again)
