"""Fresco sampling through the real ComfyUI sampling path (KSAMPLER, CFGGuider, wrappers)."""
import pytest
import torch

import comfy.patcher_extension
import comfy.sample
import comfy.samplers
from fastdit.adapters import UnsupportedInputError, UnsupportedModelError
from fastdit.dynres.fresco import fresco_sampler
from fastdit.dynres.ksampler import fresco_ksample
from fastdit.dynres.stages import StagePlan, preset_options
from fastdit.testing import tiny_models as tm

ALL_FINE = dict(split=(0, 0, 1))


def _setup(family, h=16, w=16, frames=1, batch=1, ref=False):
    model = tm.make_model(family)
    reference = tm.reference_latent(family, h, w) if ref else None
    latent = torch.zeros(tm.latent_shape(family, h, w, frames, batch))
    return model, tm.conditioning(family, 2, reference=reference), tm.conditioning(family, 3, reference=reference), latent


def _sample(model, pos, neg, latent, sampler, steps=12, cfg=1.0, seed=7, callback=None):
    noise = comfy.sample.prepare_noise(latent, seed)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).cpu()
    if isinstance(sampler, str):
        sampler = comfy.samplers.sampler_object(sampler)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, pos, neg, latent, callback=callback,
                                      disable_pbar=True, seed=seed)


def _fresco(preset="balanced", **options):
    return fresco_sampler(preset_options(preset, **options))


def _mse(a, b):
    return float(((a - b) ** 2).mean())


@pytest.mark.parametrize("family,frames", [("flux", 1), ("qwen_image", 1), ("hunyuan_video", 2)])
def test_all_fine_from_step_zero_is_plain_euler(family, frames):
    model, pos, neg, latent = _setup(family, frames=frames)
    euler = _sample(model, pos, neg, latent, "euler", cfg=2.0)
    fresco = _sample(model, pos, neg, latent, _fresco("custom", **ALL_FINE), cfg=2.0)
    assert torch.equal(fresco, euler)


def test_deterministic_per_seed_and_close_to_its_seed():
    model, pos, neg, latent = _setup("flux", 24, 24)
    a = _sample(model, pos, neg, latent, _fresco(), seed=7)
    b = _sample(model, pos, neg, latent, _fresco(), seed=7)
    c = _sample(model, pos, neg, latent, _fresco(), seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    euler_same = _sample(model, pos, neg, latent, "euler", seed=7)
    euler_other = _sample(model, pos, neg, latent, "euler", seed=8)
    # the unified field keeps the seed's image: much closer to Euler with the same seed than to another seed
    assert _mse(a, euler_same) < 0.3 * _mse(a, euler_other)
    # ... and closer than the independent re-noise ablation
    independent = _sample(model, pos, neg, latent, _fresco(renoise="independent"), seed=7)
    assert _mse(a, euler_same) < 0.5 * _mse(independent, euler_same)


@pytest.mark.parametrize("family,h,w,factor", [("flux", 13, 18, 2), ("qwen_image", 14, 19, 2), ("flux", 19, 17, 4),
                                               ("hunyuan_video", 12, 20, 2)])
def test_odd_and_non_multiple_latent_sizes(family, h, w, factor):
    model, pos, neg, latent = _setup(family, h, w)
    out = _sample(model, pos, neg, latent, _fresco("custom", split=(3, 3, 3), factor=factor), steps=9)
    assert out.shape == latent.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_batch_and_cfg(cfg):
    model, pos, neg, latent = _setup("flux", batch=2)
    evaluations = []

    def count(executor, *args, **kwargs):
        evaluations.append(args[0].shape[0])
        return executor(*args, **kwargs)

    model = model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_count", count)
    out = _sample(model, pos, neg, latent, _fresco(), steps=10, cfg=cfg)
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])
    assert sum(evaluations) == 10 * 2 * (2 if cfg > 1 else 1)         # cond (+ uncond) rows per step
    if cfg > 1:
        single = _sample(model, pos, neg, latent, _fresco(), steps=10, cfg=1.0)
        assert not torch.allclose(single, out)


def test_progress_previews_and_token_counts_per_stage():
    model, pos, neg, latent = _setup("flux", 16, 16)
    steps, seen_tokens, calls = 18, [], []

    def spy(args, extra):
        seen_tokens.append(args["img"].shape[1])
        return extra["original_block"](args)

    model = model.clone()
    model.set_model_patch_replace(spy, "dit", "double_block", 0)
    out = _sample(model, pos, neg, latent, _fresco(), steps=steps,
                  callback=lambda i, x0, x, total: calls.append((i, tuple(x0.shape), total)))
    assert [c[0] for c in calls] == list(range(steps)) and {c[2] for c in calls} == {steps}
    assert {c[1] for c in calls} == {tuple(latent.shape)}             # previews: full-resolution x0 every step
    assert len(seen_tokens) == steps
    assert seen_tokens[:5] == [16] * 5                                 # 4x4 coarse tokens in stage 1
    assert seen_tokens[5:11] == sorted(seen_tokens[5:11]) and 16 < seen_tokens[5] <= seen_tokens[10] <= 64
    assert seen_tokens[11:] == [64] * 7                                # full resolution in stage 3
    assert out.shape == latent.shape


def test_snr_matched_passes_its_sigmas_through_the_schedule_the_model_sees():
    model, pos, neg, latent = _setup("flux")
    seen = []

    def spy(executor, *args, **kwargs):
        opts = args[-1]
        seen.append((float(opts["sigmas"][0]), opts["sample_sigmas"].tolist()))
        return executor(*args, **kwargs)

    model = model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_spy", spy)
    schedule = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 12).tolist()
    _sample(model, pos, neg, latent, _fresco(transition="snr_matched"), steps=12)
    sigmas = [s for s, _ in seen]
    final_schedule = seen[-1][1]
    assert all(s in final_schedule for s in sigmas)                    # a cache can find its step index
    jumped = [i for i, (s, want) in enumerate(zip(sigmas, schedule)) if s > want + 1e-6]
    plan = StagePlan.for_steps(12, preset_options("balanced"))
    # every progressive step and the first full-resolution step upsample cells, and only those jump
    assert jumped == list(range(plan.coarse, plan.coarse + plan.progressive + 1))


def test_kontext_and_qwen_edit_references_follow_the_target():
    for family in ("flux_kontext", "qwen_image_edit"):
        model, pos, neg, latent = _setup(family, ref=True)
        out = _sample(model, pos, neg, latent, _fresco(), steps=9)
        euler = _sample(model, pos, neg, latent, "euler", steps=9)
        assert out.shape == latent.shape and _mse(out, euler) < 0.3 * float(euler.var())


def test_ksampler_helper_output_keeps_the_latent_dict():
    model, pos, neg, latent = _setup("flux", 16, 20)
    out = fresco_ksample(model, 3, 9, 1.0, "simple", pos, neg, {"samples": latent, "batch_index": [0]},
                         preset_options("fast"))
    assert out["samples"].shape == latent.shape and out["batch_index"] == [0]


def test_unsupported_model_and_inputs_are_refused_before_sampling():
    model, pos, neg, latent = _setup("flux")
    with pytest.raises(UnsupportedModelError, match="FLUX.1"):
        fresco_ksample(tm.make_model("wan"), 0, 4, 1.0, "simple", pos, neg, {"samples": latent},
                       preset_options("fast"))
    with pytest.raises(UnsupportedInputError, match="noise_mask"):
        fresco_ksample(model, 0, 4, 1.0, "simple", pos, neg, {"samples": latent, "noise_mask": torch.ones(1, 16, 16)},
                       preset_options("fast"))
    masked = [[pos[0][0], dict(pos[0][1], mask=torch.ones(1, 16, 16))]]
    with pytest.raises(UnsupportedInputError, match="area or mask"):
        fresco_ksample(model, 0, 4, 1.0, "simple", masked, neg, {"samples": latent}, preset_options("fast"))
    with pytest.raises(UnsupportedInputError, match="area or mask"):   # the SAMPLER checks ComfyUI's own conds
        _sample(model, masked, neg, latent, _fresco(), steps=4)
    with pytest.raises(UnsupportedInputError, match="inpaint"):
        noise = comfy.sample.prepare_noise(latent, 0)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4).cpu()
        comfy.sample.sample_custom(model, noise, 1.0, _fresco(), sigmas, pos, neg, latent,
                                   noise_mask=torch.ones(1, 1, 16, 16), disable_pbar=True, seed=0)


def test_img2img_starts_from_the_partly_noised_latent():
    """Sigmas starting below 1 (denoise < 1): the first model call sees the coarse RF state of the
    input latent, (1 - s) * block mean + s * Haar DC of the seed's noise."""
    from fastdit.dynres.layout import CellGrid, as5d
    from fastdit.dynres.noise_field import coarse_noise
    model, pos, neg, latent = _setup("flux", 16, 16)
    source = torch.randn(latent.shape, generator=torch.Generator().manual_seed(4))
    noise = comfy.sample.prepare_noise(latent, 1)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 24)[12:].cpu()
    first = []

    def spy(executor, *args, **kwargs):
        first.append(args[0].clone())
        return executor(*args, **kwargs)

    model = model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_spy", spy)
    comfy.sample.sample_custom(model, noise, 1.0, _fresco("fast"), sigmas, pos, neg, source, disable_pbar=True, seed=1)
    grid, s = CellGrid.of(latent.shape, 2), float(sigmas[0])
    signal = model.model.process_latent_in(source)                    # what KSAMPLER receives
    want = (1 - s) * grid.coarse(as5d(signal)) + s * coarse_noise(as5d(noise), grid)
    assert torch.allclose(grid.coarse(as5d(first[0])), want, atol=1e-5)


def test_latent_concatenating_conditioning_is_refused():
    """Fill / inpaint / depth-concat models concatenate a noise-shaped latent (c_concat)."""
    import comfy.conds
    from fastdit.dynres.fresco import check_conditioning
    processed = {"model_conds": {"c_concat": comfy.conds.CONDNoiseShape(torch.zeros(1, 20, 16, 16))}}
    with pytest.raises(UnsupportedInputError, match="concatenate a latent"):
        check_conditioning([{"model_conds": {}}, processed])
    with pytest.raises(UnsupportedInputError, match="concatenate a latent"):
        check_conditioning([{"concat_latent_image": torch.zeros(1, 16, 16, 16)}])
    check_conditioning([{"model_conds": {"c_crossattn": comfy.conds.CONDCrossAttn(torch.zeros(1, 8, 64))}}])


def test_ksampler_helper_denoise():
    """denoise d runs KSampler's sigmas (the last steps of int(steps / d)); 0 returns the latent."""
    from fastdit.dynres.ksampler import denoise_sigmas
    model, pos, neg, latent = _setup("flux", 16, 16)
    ms = model.get_model_object("model_sampling")
    full = comfy.samplers.calculate_sigmas(ms, "simple", 30).cpu()
    assert torch.equal(denoise_sigmas(model, "simple", 9, 0.3), full[-10:])
    assert torch.equal(denoise_sigmas(model, "simple", 9, 1.0), comfy.samplers.calculate_sigmas(ms, "simple", 9).cpu())
    source = torch.randn(latent.shape, generator=torch.Generator().manual_seed(3))
    out = fresco_ksample(model, 3, 9, 1.0, "simple", pos, neg, {"samples": source}, preset_options("fast"), denoise=0.0)
    assert torch.equal(out["samples"], source)
    with pytest.raises(ValueError, match="between 0 and 1"):
        fresco_ksample(model, 3, 9, 1.0, "simple", pos, neg, {"samples": source}, preset_options("fast"), denoise=1.5)
    low = fresco_ksample(model, 3, 9, 1.0, "simple", pos, neg, {"samples": source}, preset_options("fast"),
                         denoise=0.2)["samples"]
    high = fresco_ksample(model, 3, 9, 1.0, "simple", pos, neg, {"samples": source}, preset_options("fast"),
                          denoise=0.9)["samples"]
    assert _mse(low, source) < 0.5 * _mse(high, source)               # less denoise, closer to the latent
