"""HiCache through the real ComfyUI on tiny models of every supported family.

Covers the failure modes users report in the issue trackers of existing cache packs: identical
output at interval 1, no state across runs (repeat, interrupt, resolution change), cond/uncond
batched vs split, batch sizes, cfg 1, multi-evaluation samplers, LoRA, EasyCache in the same graph,
non-finite forecasts, unsupported models.
"""
import logging
import re

import pytest
import torch

import comfy.model_management
import comfy.patcher_extension as pe
import comfy.sample
from fastdit.caching import HICACHE_KEY, apply_hicache
from fastdit.testing import tiny_models as tm
from fastdit.testing.comfy_env import GraphError, execute
from fastdit.testing.stacking import tiny_lora_state_dict

VIDEO = ("hunyuan_video", "wan")
EDIT = ("flux_kontext", "qwen_image_edit")
SUMMARY = re.compile(r"(\d+) model evaluations = (\d+) full \+ (\d+) forecast; cost ratio ([\d.]+)x.*?"
                     r"(\d+) slots x (\d+) conds?")


def _inputs(family, h=16, w=16, batch=1, seed=0):
    ref = tm.reference_latent(family, h, w) if family in EDIT else None
    pos, neg = tm.conditioning(family, 0, reference=ref), tm.conditioning(family, 1, reference=ref)
    latent = torch.zeros(tm.latent_shape(family, h, w, frames=3 if family in VIDEO else 1, batch=batch))
    return pos, neg, latent, comfy.sample.prepare_noise(latent, seed)


def _sample(model, family, steps=12, cfg=2.0, sampler="euler", h=16, w=16, batch=1, noise=None, callback=None):
    pos, neg, latent, default_noise = _inputs(family, h, w, batch)
    noise = default_noise if noise is None else noise
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", pos, neg, latent, disable_pbar=True,
                               callback=callback)


def _summaries(caplog):
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("HiCache (")]
    return lines, [tuple(float(g) for g in SUMMARY.search(line).groups()) for line in lines]


def _rel_err(a, b):
    return float(((a - b).pow(2).mean() / b.pow(2).mean()).sqrt())


@pytest.fixture
def info_log(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def test_node_is_registered_with_the_papers_defaults(pack_nodes):
    schema = pack_nodes["FastDiTHiCache"].define_schema()
    assert schema.display_name == "HiCache (Hermite feature forecast)" and schema.category == "FastDiT/caching"
    defaults = {i.id: i.default for i in schema.inputs if hasattr(i, "default")}
    assert defaults == {"interval": 7, "order": 2, "sigma": 0.5, "warmup_steps": 3, "mode": "hicache",
                        "start_percent": 0.0, "end_percent": 1.0, "granularity": "module", "cache_device": "compute",
                        "speed": "auto"}
    assert all(i.tooltip for i in schema.inputs if i.id != "model")


@pytest.mark.parametrize("family", tm.FAMILIES)
@pytest.mark.parametrize("granularity", ["module", "block"])
def test_forecasts_on_every_family(family, granularity, info_log):
    model = tm.make_model(family)
    base = _sample(model, family)
    out = _sample(apply_hicache(model, interval=4, warmup_steps=2, granularity=granularity), family)
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    assert _rel_err(out, base) < 0.35
    (line,), ((evals, full, forecast, ratio, slots, conds),) = _summaries(info_log)
    # 12 steps, warm-up 2, N=4: full at 0, 1, 5, 9 -> 4 full, 8 forecast, 3x
    assert (evals, full, forecast, ratio, conds) == (12, 4, 8, 3.0, 2)
    assert slots > 0 and "fallback" not in line


def _attention_calls(model, family, **kw):
    calls = []

    def spy(func, *args, **kwargs):
        calls.append(args[0].shape)
        return func(*args, **kwargs)

    m = model.clone()
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = spy
    _sample(m, family, cfg=1.0, **kw)
    return len(calls)


@pytest.mark.parametrize("family", ["flux", "qwen_image", "wan"])
def test_forecast_steps_skip_attention(family):
    model = tm.make_model(family)
    base = _attention_calls(model, family)
    cached = _attention_calls(apply_hicache(model, interval=4, warmup_steps=2), family)
    assert cached * 3 == base  # 4 of 12 evaluations run their blocks (cfg 1: one call per step)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_interval_one_is_identical_to_the_unpatched_model(family):
    model = tm.make_model(family)
    base = _sample(model, family)
    for granularity in ("module", "block"):
        assert torch.equal(_sample(apply_hicache(model, interval=1, granularity=granularity), family), base)


def test_same_model_twice_gives_identical_output_and_no_state_survives():
    model = apply_hicache(tm.make_model("flux"), interval=5)
    first, second = _sample(model, "flux"), _sample(model, "flux")
    assert torch.equal(first, second)
    opts = model.model_options["transformer_options"]
    assert HICACHE_KEY + "_run" not in opts


def _compare_graph(family="flux", reference_model="1", steps=12):
    """Tiny model -> HiCache node; sampler on `reference_model` vs sampler on HiCache; PSNR of the two."""
    frames = 3 if family in VIDEO else 1

    def ksampler(model):
        return {"class_type": "KSampler", "inputs": {"model": [model, 0], "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["1", 3], "seed": 3, "steps": steps, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}

    return {
        "1": {"class_type": "FastDiTTestModel", "inputs": {"family": family, "seed": 0, "width": 16, "height": 16, "frames": frames, "batch_size": 1}},
        "2": {"class_type": "FastDiTHiCache", "inputs": {"model": ["1", 0], "interval": 4, "order": 2, "sigma": 0.5, "warmup_steps": 2, "mode": "hicache", "start_percent": 0.0, "end_percent": 1.0, "granularity": "module"}},
        "3": ksampler(reference_model),
        "4": ksampler("2"),
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 4]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 4]}},
        "7": {"class_type": "FastDiTCompare", "inputs": {"reference": ["5", 0], "candidate": ["6", 0]}},
    }


def test_graph_run_twice_is_identical():
    # both samplers use the same HiCache MODEL output: the second run must not see the first's state
    assert execute(_compare_graph(reference_model="2"))["7"]["fastdit_metrics"][0]["psnr"] == "inf"


def test_other_resolution_after_the_first(info_log):
    model = apply_hicache(tm.make_model("flux"), interval=4, warmup_steps=2)
    _sample(model, "flux", h=16, w=16)
    second = _sample(model, "flux", h=24, w=20)
    fresh = _sample(apply_hicache(tm.make_model("flux"), interval=4, warmup_steps=2), "flux", h=24, w=20)
    assert second.shape[-2:] == (24, 20) and torch.equal(second, fresh)


def test_resolution_change_inside_one_run_keeps_separate_caches(info_log):
    # a model called at two token counts within one run (as a multi-resolution sampler does)
    model = apply_hicache(tm.make_model("flux"), interval=3, warmup_steps=1)
    seen = []

    def two_sizes(executor, *args, **kwargs):
        x = args[0]
        small = torch.nn.functional.interpolate(x, scale_factor=0.5)
        seen.append(executor(small, *args[1:], **kwargs).shape)
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test_two_sizes", two_sizes)
    out = _sample(model, "flux")
    assert torch.isfinite(out).all() and seen[0][-1] == 8
    (_, (_, _, forecast, _, slots, conds)), = [x for x in zip(*_summaries(info_log))]
    assert forecast > 0 and conds == 2
    assert slots == 2 * (2 * 4 + 2 * 1)  # two resolutions x (2 double blocks x 4 + 2 single x 1)


def test_batched_and_split_cond_uncond_give_the_same_result():
    model = apply_hicache(tm.make_model("flux"), interval=4, warmup_steps=2)
    batched = _sample(model, "flux")
    # ComfyUI runs cond and uncond in separate calls when a batch would not fit in free memory:
    # a model whose activations need more memory than the machine has gets split calls
    calls = []
    model2 = model.clone()
    model2.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test_count",
                                lambda ex, *a, **k: calls.append(a[0].shape[0]) or ex(*a, **k))
    factor = model2.model.memory_usage_factor
    model2.model.memory_usage_factor = 1e9
    try:
        split = _sample(model2, "flux")
    finally:
        model2.model.memory_usage_factor = factor
    assert set(calls) == {1} and len(calls) == 24
    assert torch.allclose(split, batched, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch", [2, 3])
def test_batch_rows_are_independent(batch):
    model = apply_hicache(tm.make_model("flux"), interval=4, warmup_steps=2)
    _, _, latent, noise = _inputs("flux", batch=batch)
    together = _sample(model, "flux", batch=batch, noise=noise)
    for i in range(batch):
        alone = _sample(model, "flux", noise=noise[i:i + 1])
        assert torch.allclose(together[i:i + 1], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cfg,conds", [(1.0, 1), (3.5, 2)])
def test_cfg_one_and_above(cfg, conds, info_log):
    model = tm.make_model("qwen_image")
    out = _sample(apply_hicache(model, interval=4, warmup_steps=2), "qwen_image", cfg=cfg)
    base = _sample(model, "qwen_image", cfg=cfg)
    assert _rel_err(out, base) < 0.2
    (_, (evals, full, forecast, ratio, _, n_conds)), = [x for x in zip(*_summaries(info_log))]
    assert n_conds == conds and evals == 12 and ratio == 3.0


@pytest.mark.parametrize("sampler,evals,full", [("heun", 23, 7), ("dpmpp_2m", 12, 4), ("dpm_2", 23, 8)])
def test_multi_evaluation_samplers_follow_the_schedule(sampler, evals, full, info_log):
    # Heun: 2 evaluations per step (the last step is Euler); its corrector at sigma_{i+1} takes
    # step i+1's decision. Full steps at warm-up 2, N=4 over 12 steps: 0, 1, 5, 9.
    model = tm.make_model("flux")
    out = _sample(apply_hicache(model, interval=4, warmup_steps=2), "flux", sampler=sampler)
    base = _sample(model, "flux", sampler=sampler)
    assert torch.isfinite(out).all() and _rel_err(out, base) < 0.5
    (_, (n_evals, n_full, _, _, _, _)), = [x for x in zip(*_summaries(info_log))]
    assert (n_evals, n_full) == (evals, full)


def test_stacked_on_a_lora_patched_model():
    import comfy.sd
    base_model = tm.make_model("flux")
    lora_model, _ = comfy.sd.load_lora_for_models(base_model, None, tiny_lora_state_dict(base_model), 1.0, 0)
    with_lora = _sample(lora_model, "flux")
    assert _rel_err(with_lora, _sample(base_model, "flux")) > 0.05  # the LoRA changes the image
    assert torch.equal(_sample(apply_hicache(lora_model, interval=1), "flux"), with_lora)  # module math sees LoRA
    cached = _sample(apply_hicache(lora_model, interval=4, warmup_steps=2), "flux")
    assert _rel_err(cached, with_lora) < 0.35


def test_combined_with_easycache_in_one_graph(info_log):
    def graph(first, second):
        nodes = {
            "1": {"class_type": "FastDiTTestModel", "inputs": {"family": "flux", "seed": 0, "width": 16, "height": 16, "frames": 1, "batch_size": 1}},
            "2": {"class_type": "EasyCache", "inputs": {"reuse_threshold": 0.3, "start_percent": 0.1, "end_percent": 0.95, "verbose": False}},
            "3": {"class_type": "FastDiTHiCache", "inputs": {"interval": 4, "order": 2, "sigma": 0.5, "warmup_steps": 2, "mode": "hicache", "start_percent": 0.0, "end_percent": 1.0, "granularity": "module"}},
            "4": {"class_type": "KSampler", "inputs": {"model": [second, 0], "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["1", 3], "seed": 3, "steps": 20, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
            "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 4]}},
            "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
        }
        nodes[first]["inputs"]["model"] = ["1", 0]
        nodes[second]["inputs"]["model"] = [first, 0]
        return nodes

    # Both skip model work and would forecast from each other's reused output (15 dB from the baseline
    # where each alone gives 23-29 dB): refused in either order, naming the conflict.
    for first, second in (("2", "3"), ("3", "2")):
        with pytest.raises(GraphError, match="cannot run together with ComfyUI's EasyCache / LazyCache"):
            execute(graph(first, second))


def test_applied_twice_the_second_settings_replace_the_first(info_log):
    model = tm.make_model("flux")
    twice = apply_hicache(apply_hicache(model, interval=5), interval=4, warmup_steps=2)
    assert any("this model already has HiCache" in r.getMessage() and "replace it" in r.getMessage()
               for r in info_log.records)
    assert torch.equal(_sample(twice, "flux"), _sample(apply_hicache(model, interval=4, warmup_steps=2), "flux"))


def test_another_feature_cache_on_the_same_model_is_refused():
    from fastdit.adapters import UnsupportedInputError
    from fastdit.caching.comfy_hooks import install

    class OtherCache:   # any of the pack's feature caches (SVD-Cache, a calibration pass) looks like this
        technique = "SVD-Cache"

    patched = apply_hicache(tm.make_model("flux"), interval=5)
    with pytest.raises(UnsupportedInputError, match="already has HiCache: both replace the transformer blocks"):
        install(patched, type("C", (OtherCache,), {"granularity": "module", "describe": lambda self: "x"})(),
                "fastdit_other")


@pytest.mark.parametrize("family", ["wan", "hunyuan_video"])
def test_context_windows_keep_one_cache_per_window(family, info_log):
    """ComfyUI's context windows run one model call per window of frames; windows of one length
    have the same shapes, so the caches are keyed by the window too."""
    import comfy.context_windows as cw
    model = tm.make_model(family)
    pos, neg, _, _ = _inputs(family)
    latent = torch.zeros(tm.latent_shape(family, 16, 16, frames=6))
    noise = comfy.sample.prepare_noise(latent, 0)

    def windowed(m):
        m = m.clone()
        m.model_options["context_handler"] = cw.IndexListContextHandler(
            context_schedule=cw.get_matching_context_schedule("standard_static"),
            fuse_method=cw.get_matching_fuse_method("pyramid"), context_length=4, context_overlap=2, dim=2)
        return m

    def sample(m):
        return comfy.sample.sample(m, noise, 12, 2.0, "euler", "simple", pos, neg, latent, disable_pbar=True)

    base = sample(windowed(model))
    out = sample(windowed(apply_hicache(model, interval=4, warmup_steps=2)))
    plain = sample(apply_hicache(model, interval=4, warmup_steps=2))
    assert _rel_err(out, base) < 0.35
    (with_windows, without) = _summaries(info_log)[1]
    slots_windows, slots_plain = with_windows[4], without[4]
    assert slots_windows >= 2 * slots_plain     # at least two windows, each with its own slots
    assert torch.isfinite(plain).all()
def test_interrupted_run_leaves_no_state(info_log):
    model = apply_hicache(tm.make_model("flux"), interval=4, warmup_steps=2)

    def stop(step, *args):
        if step == 6:
            raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        _sample(model, "flux", callback=stop)
    assert "stopped early" in _summaries(info_log)[0][0]
    after = _sample(model, "flux")
    assert torch.equal(after, _sample(apply_hicache(tm.make_model("flux"), interval=4, warmup_steps=2), "flux"))


def test_non_finite_forecast_falls_back_to_a_full_compute(info_log):
    model = apply_hicache(tm.make_model("flux"), interval=4, warmup_steps=2)
    clean = _sample(model, "flux")
    poisoned = model.clone()
    done = []

    def poison(executor, *args, **kwargs):
        run = args[-1][HICACHE_KEY + "_run"]
        if not done and run.evaluation(args[-1]["sigmas"][0]).mode == "forecast":
            for entry in run.store._entries.values():
                for hist in entry.values():
                    hist.terms[0] = torch.full_like(hist.terms[0], float("nan"))
            done.append(True)
        return executor(*args, **kwargs)

    poisoned.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test_poison", poison)
    out = _sample(poisoned, "flux")
    assert done and torch.isfinite(out).all()
    lines, stats = _summaries(info_log)
    assert "1 non-finite forecasts recomputed in full" in lines[1]
    assert _rel_err(out, clean) < 0.2


def test_all_finite_needs_every_element_finite():
    """The fallback's check: one reduction, and the elementwise test where the sum overflowed."""
    from fastdit.caching.comfy_hooks import all_finite
    x = torch.randn(2, 4, 8, 8)
    assert all_finite(x)
    for bad in (float("nan"), float("inf"), float("-inf")):
        y = x.clone()
        y[1, 2, 3, 4] = bad
        assert not all_finite(y), bad
    big = torch.full((4, 64), 6e4, dtype=torch.float16)   # every element finite, the fp16 sum overflows
    assert not torch.isfinite(big.sum()) and all_finite(big)
    big[0, 0] = float("nan")
    assert not all_finite(big)


def test_unsupported_model_gets_a_clear_error(pack_nodes):
    node = pack_nodes["FastDiTHiCache"]
    from fastdit.adapters import UnsupportedModelError    # the very class the node raises (one copy per process)
    with pytest.raises(UnsupportedModelError, match=r"HiCache does not support this model \(UNetModel.*Supported model families: FLUX"):
        node.execute(model=tm.make_model("sd15"), interval=7, order=2, sigma=0.5, warmup_steps=3, mode="hicache",
                     start_percent=0.0, end_percent=1.0, granularity="module")


@pytest.mark.parametrize("family,n_ref", [("flux_kontext", 64), ("qwen_image_edit", 64)])
def test_reference_tokens_are_cached_with_the_image_stream(family, n_ref):
    model = apply_hicache(tm.make_model(family), interval=4, warmup_steps=2)
    shapes = {}

    def peek(executor, *args, **kwargs):
        out = executor(*args, **kwargs)
        run = args[-1][HICACHE_KEY + "_run"]
        for (uuid, key, res), entry in run.store._entries.items():
            if key == ("double_block", 0):
                shapes[uuid] = entry["img_attn"].terms[0].shape
        return out

    model.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test_peek", peek)
    _sample(model, family)
    target = (16 // 2) * (16 // 2)
    assert {s[1] for s in shapes.values()} == {target + n_ref}


def test_percent_window_limits_forecasting(info_log):
    model = tm.make_model("flux")
    _sample(apply_hicache(model, interval=4, warmup_steps=2, start_percent=0.5), "flux")
    _sample(apply_hicache(model, interval=4, warmup_steps=2, end_percent=0.5), "flux")
    (_, (_, _, late, _, _, _)), (_, (_, _, early, _, _, _)) = list(zip(*_summaries(info_log)))
    assert 0 < late < 8 and 0 < early < 8  # 8 forecast steps without a window


@pytest.mark.parametrize("family", ["flux", "qwen_image"])
def test_bf16_model_and_cpu_offloaded_cache(family):
    model = tm.make_model(family, dtype=torch.bfloat16)
    base = _sample(model, family)
    on_device = _sample(apply_hicache(model, interval=4, warmup_steps=2), family)
    offloaded = _sample(apply_hicache(model, interval=4, warmup_steps=2, cache_device="cpu"), family)
    assert torch.isfinite(on_device).all() and _rel_err(on_device, base) < 0.35
    assert torch.equal(offloaded, on_device)


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_node_in_a_graph_for_every_family(family, info_log):
    graph = _compare_graph(family)
    psnr = execute(graph)["7"]["fastdit_metrics"][0]["psnr"]
    assert psnr != "inf" and float(psnr) > 10
    (_, (evals, full, forecast, ratio, _, conds)), = [x for x in zip(*_summaries(info_log))]
    assert (evals, full, forecast, ratio, conds) == (12, 4, 8, 3.0, 2)


def test_blocks_of_an_unknown_interface_fall_back_to_block_granularity(info_log):
    from comfy.ldm.flux.layers import DoubleStreamBlock

    class NewerDoubleBlock(DoubleStreamBlock):  # a block whose forward gained an argument
        def forward(self, *args, extra_argument=None, **kwargs):
            return super().forward(*args, **kwargs)

    model = tm.make_model("flux")
    dm = model.model.diffusion_model
    newer = NewerDoubleBlock.__new__(NewerDoubleBlock)
    newer.__dict__.update(dm.double_blocks[1].__dict__)
    dm.double_blocks[1] = newer
    base = _sample(model, "flux")
    out = _sample(apply_hicache(model, interval=4, warmup_steps=2), "flux")
    assert _rel_err(out, base) < 0.35
    warnings = [r.getMessage() for r in info_log.records if "not of a known block interface" in r.getMessage()]
    assert warnings and "('double_block', 1)" in warnings[0]
    line = _summaries(info_log)[0][0]
    assert "block granularity used for 1 blocks without module slots" in line


def _halve_attention(attn, extra_options):
    return attn * 0.5


@pytest.mark.parametrize("family", ["flux", "qwen_image"])
def test_attention_patches_use_block_granularity(family, info_log):
    """Blocks of newer releases run attn1_patch / attn1_output_patch inside attention, which the module
    math cannot follow: HiCache caches whole blocks, says so, and a full compute equals the model's."""
    model = tm.make_model(family).clone()
    model.set_model_attn1_output_patch(_halve_attention)
    base = _sample(model, family)
    assert torch.equal(_sample(apply_hicache(model, interval=1), family), base)
    out = _sample(apply_hicache(model, interval=4, warmup_steps=2), family)
    assert torch.isfinite(out).all() and _rel_err(out, base) < 0.35
    warnings = [r.getMessage() for r in info_log.records if "module granularity cannot follow" in r.getMessage()]
    assert warnings and "attn1_output_patch" in warnings[0]
    assert "block granularity for every block: attention patches (attn1_output_patch)" in _summaries(info_log)[0][-1]


@pytest.mark.parametrize("family", ["qwen_image_edit"])
def test_index_timestep_zero_references_use_block_granularity(family, info_log):
    """References modulated at timestep 0 reach the blocks through the model's closures: block granularity."""
    model = tm.make_model(family)
    ref = tm.reference_latent(family)
    pos = tm.conditioning(family, 0, reference=ref)
    neg = tm.conditioning(family, 1, reference=ref)
    for cond in (pos, neg):
        cond[0][1]["reference_latents_method"] = "index_timestep_zero"
    latent = torch.zeros(tm.latent_shape(family, 16, 16))
    noise = comfy.sample.prepare_noise(latent, 0)

    def sample(m):
        return comfy.sample.sample(m, noise, 12, 2.0, "euler", "simple", pos, neg, latent, disable_pbar=True)

    base = sample(model)
    assert torch.equal(sample(apply_hicache(model, interval=1)), base)
    assert _rel_err(sample(apply_hicache(model, interval=4, warmup_steps=2)), base) < 0.35
    assert "block granularity for every block: the index_timestep_zero reference method" in \
        [line for line in _summaries(info_log)[0]][-1]
