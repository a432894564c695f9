"""Fresco with a cache stacked on the same model.

HiCache (FastDiT's feature cache) keys its caches by the token set, so it starts afresh at every
change of Fresco's layout and forecasts inside the full-resolution stage. ComfyUI's EasyCache and
LazyCache key on the latent's shape, which Fresco keeps: they are refused with a clear error."""
import pytest
import torch

import comfy.patcher_extension
import comfy.sample
import comfy.samplers
from fastdit.adapters import UnsupportedInputError
from fastdit.dynres.forward import LAYOUT_KEY
from fastdit.dynres.fresco import fresco_sampler
from fastdit.dynres.stages import StagePlan, preset_options
from fastdit.testing import tiny_models as tm

STEPS = 18


def _traced(model):
    """A clone recording per model call the token layout Fresco announces in transformer_options
    and how many attention calls ran (a forecast block makes none)."""
    calls = []

    def step(executor, *args, **kwargs):
        layout = args[-1][LAYOUT_KEY]
        calls.append({"layout": layout.key, "stage": layout.stage, "attention": 0})
        return executor(*args, **kwargs)

    def attention(func, *args, **kwargs):
        calls[-1]["attention"] += 1
        return func(*args, **kwargs)

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_trace", step)
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = attention
    return m, calls


def _run(model, options):
    latent = torch.zeros(tm.latent_shape("flux", 24, 24))
    pos, neg = tm.conditioning("flux", 2), tm.conditioning("flux", 3)
    noise = comfy.sample.prepare_noise(latent, 11)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", STEPS).cpu()
    return comfy.sample.sample_custom(model, noise, 1.0, fresco_sampler(options), sigmas, pos, neg, latent,
                                      disable_pbar=True, seed=11)


def test_hicache_inside_fresco_resets_at_every_resolution_change():
    caching = pytest.importorskip("fastdit.caching", reason="HiCache is not part of this checkout")
    options = preset_options("balanced")
    plan = StagePlan.for_steps(STEPS, options)
    base = tm.make_model("flux")
    plain_model, plain_calls = _traced(base)
    plain = _run(plain_model, options)
    blocks = plain_calls[0]["attention"]                          # attention calls of a full forward
    assert len(plain_calls) == STEPS and all(c["attention"] == blocks for c in plain_calls)
    model, calls = _traced(caching.apply_hicache(base, interval=3, warmup_steps=1, order=1))
    cached = _run(model, options)
    assert len(calls) == STEPS
    changes = [i for i in range(STEPS) if i == 0 or calls[i]["layout"] != calls[i - 1]["layout"]]
    # a new token set at the start, at every progressive step and when stage 3 opens
    assert changes == [0] + list(range(plan.coarse, plan.coarse + plan.progressive + 1))
    for i in changes:                                              # nothing cached for a new token set yet
        assert calls[i]["attention"] == blocks, (i, calls[i])
    stage3 = [c for c in calls if c["stage"] == 3]
    assert len(stage3) == plan.full and any(c["attention"] < blocks for c in stage3), "no forecast in stage 3"
    assert torch.isfinite(cached).all() and ((cached - plain) ** 2).mean() < 0.25 * plain.var()


def test_easycache_is_refused():
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode
    base = tm.make_model("flux")
    for node in (EasyCacheNode, LazyCacheNode):
        model = node.execute(base, reuse_threshold=0.2, start_percent=0.15, end_percent=0.95, verbose=False).args[0]
        with pytest.raises(UnsupportedInputError, match="HiCache"):
            _run(model, preset_options("fast"))


def test_context_windows_are_refused():
    """ComfyUI's context windows slice the latent per window; Fresco's layout covers the whole latent
    (it crashed in the token kernels before it refused)."""
    import comfy.context_windows as cw
    model = tm.make_model("flux").clone()
    model.model_options["context_handler"] = cw.IndexListContextHandler(
        context_schedule=cw.get_matching_context_schedule("standard_static"),
        fuse_method=cw.get_matching_fuse_method("pyramid"), context_length=4, context_overlap=2, dim=3)
    with pytest.raises(UnsupportedInputError, match="context windows"):
        _run(model, preset_options("fast"))
