"""SVD-Cache through the real ComfyUI: calibrate -> patch -> sample on tiny models of every family,
exactness at interval 1, bases across resolutions, the forecast rules, and every bad input."""
import logging
import re

import pytest
import torch

import comfy.patcher_extension as pe
import comfy.sample
from fastdit.caching import HICACHE_KEY, SVDCACHE_KEY, apply_hicache, apply_svdcache
from fastdit.caching.svd import SVDBasis, SVDCacheConfig, SVDForecaster, calibrate
from fastdit.testing import tiny_models as tm
from fastdit.testing.comfy_env import GraphError, execute

VIDEO = ("hunyuan_video", "wan")
EDIT = ("flux_kontext", "qwen_image_edit")
SUMMARY = re.compile(r"(\d+) model evaluations = (\d+) full \+ (\d+) forecast; cost ratio ([\d.]+)x.*?"
                     r"(\d+) slots x (\d+) conds?")
_BASES = {}


def _inputs(family, h=16, w=16, seed=0):
    ref = tm.reference_latent(family, h, w) if family in EDIT else None
    pos, neg = tm.conditioning(family, 0, reference=ref), tm.conditioning(family, 1, reference=ref)
    latent = torch.zeros(tm.latent_shape(family, h, w, frames=3 if family in VIDEO else 1))
    return pos, neg, latent, comfy.sample.prepare_noise(latent, seed)


def _sample(model, family, steps=12, cfg=2.0, h=16, w=16, sampler="euler"):
    pos, neg, latent, noise = _inputs(family, h, w)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", pos, neg, latent, disable_pbar=True)


def _basis(family, h=16, w=16, tau=0.85, interval=4, warmup=2, cond_seed=0):
    key = (family, h, w, tau, interval, warmup, cond_seed)
    if key not in _BASES:
        model = tm.make_model(family)
        ref = tm.reference_latent(family, h, w) if family in EDIT else None
        pos, neg, latent, _ = _inputs(family, h, w)
        if cond_seed:
            pos = tm.conditioning(family, cond_seed, reference=ref)
        _BASES[key] = calibrate(model, pos, neg, {"samples": latent}, 12, 2.0, 0, interval=interval, tau=tau,
                                warmup_steps=warmup)
    return _BASES[key]


def _rel_err(a, b):
    return float(((a - b).pow(2).mean() / b.pow(2).mean()).sqrt())


def _summaries(caplog):
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SVD-Cache (")]
    return lines, [tuple(float(g) for g in SUMMARY.search(line).groups()) for line in lines]


@pytest.fixture
def info_log(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def test_nodes_are_registered_with_the_papers_defaults(pack_nodes):
    cal = pack_nodes["FastDiTSVDCacheCalibrate"].define_schema()
    assert cal.display_name == "SVD-Cache calibrate (one-time basis)" and cal.category == "FastDiT/caching"
    inputs = {i.id: i for i in cal.inputs}
    assert inputs["tau"].default == 0.85 and inputs["tau"].max == 1.0 and inputs["tau"].min > 0
    assert inputs["seed"].control_after_generate is False
    assert "4.3 GB" in cal.description and "0.36 GB" in cal.description
    assert [o.io_type for o in cal.outputs] == ["SVD_BASIS", "LATENT"]
    node = pack_nodes["FastDiTSVDCache"].define_schema()
    assert node.display_name == "SVD-Cache (subspace feature forecast)" and node.category == "FastDiT/caching"
    defaults = {i.id: getattr(i, "default", None) for i in node.inputs}
    assert {k: defaults[k] for k in ("interval", "beta", "ema_mode", "warmup_steps", "start_percent", "end_percent",
                                     "cache_device")} == {"interval": 7, "beta": 0.3, "ema_mode": "trend",
                                                          "warmup_steps": 3, "start_percent": 0.0, "end_percent": 1.0,
                                                          "cache_device": "compute"}
    assert {i.id: i for i in node.inputs}["basis"].optional


@pytest.mark.parametrize("family", tm.FAMILIES)
def test_calibrate_patch_sample_on_every_family(family, info_log):
    basis, calibrated = _basis(family)
    model = tm.make_model(family)
    base = _sample(model, family)
    assert torch.equal(calibrated["samples"], base)                     # calibration is the uncached run
    assert basis.family == {"flux_kontext": "flux", "qwen_image_edit": "qwen_image"}.get(family, family)
    ranks = basis.ranks()
    assert len(ranks) == len(basis.layout) and all(0 < k < basis.hidden_size for k in ranks.values())
    # interval 1 = the unpatched model, bit for bit
    assert torch.equal(_sample(apply_svdcache(model, basis=basis, interval=1), family), base)
    info_log.clear()
    out = _sample(apply_svdcache(model, basis=basis, interval=4, warmup_steps=2), family)
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    assert _rel_err(out, base) < 0.6
    (line,), ((evals, full, forecast, ratio, slots, conds),) = _summaries(info_log)
    # 12 steps, warm-up 2, N=4: full at 0, 1, 5, 9 -> 4 full, 8 forecast, 3x
    assert (evals, full, forecast, ratio, conds) == (12, 4, 8, 3.0, 2)
    assert slots == len(basis.layout) and "fallback" not in line


def test_basis_is_used_at_another_resolution(info_log):
    basis, _ = _basis("flux", 16, 16)
    model = tm.make_model("flux")
    base = _sample(model, "flux", h=24, w=20)
    assert torch.equal(_sample(apply_svdcache(model, basis=basis, interval=1), "flux", h=24, w=20), base)
    other = _sample(apply_svdcache(model, basis=basis, interval=4, warmup_steps=2), "flux", h=24, w=20)
    native_basis, _ = _basis("flux", 24, 20)
    native = _sample(apply_svdcache(model, basis=native_basis, interval=4, warmup_steps=2), "flux", h=24, w=20)
    assert other.shape[-2:] == (24, 20) and torch.isfinite(other).all()
    # the 16x16 basis forecasts the 24x20 run about as well as a basis calibrated at 24x20
    assert _rel_err(other, base) < 1.5 * _rel_err(native, base) + 0.02


def test_no_decomposition_is_plain_reuse_and_the_whole_space_with_beta_zero_is_taylor():
    model = tm.make_model("flux")
    reuse = _sample(apply_svdcache(model, subspace="none", interval=4, warmup_steps=2), "flux")
    assert torch.equal(reuse, _sample(apply_hicache(model, mode="reuse", interval=4, warmup_steps=2), "flux"))
    full = _sample(apply_svdcache(model, subspace="full", beta=0.0, interval=4, warmup_steps=2), "flux")
    taylor = _sample(apply_hicache(model, mode="taylorseer", order=1, interval=4, warmup_steps=2), "flux")
    assert torch.allclose(full, taylor, atol=1e-5, rtol=1e-5)


def _fake_basis(d=6, k=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return v[:, :k].float(), v[:, k:].float()


class _OneSlot:
    """A basis stand-in with one slot, for the forecaster's math."""

    def __init__(self, v):
        self.v = v

    def basis(self, slot):
        return self.v


def _forecaster(v, mode, beta, warmup=0):
    cfg = SVDCacheConfig.__new__(SVDCacheConfig)
    for k, val in dict(basis=_OneSlot(v), beta=beta, ema_mode=mode, warmup_steps=warmup, subspace="basis").items():
        object.__setattr__(cfg, k, val)
    return SVDForecaster(cfg)


@pytest.mark.parametrize("mode", ["trend", "level", "holt"])
def test_forecast_rules_in_coefficient_space(mode):
    """F(s) = c(s) V^T + R with a fixed residual R: each rule forecasts c and keeps R exactly."""
    v, v_perp = _fake_basis()
    r = torch.tensor([[0.3, -0.7, 0.2, 0.1]]) @ v_perp.T                    # residual: orthogonal to V
    coef = {0: torch.tensor([[1.0, 2.0]]), 2: torch.tensor([[1.5, 1.0]]), 5: torch.tensor([[2.0, 0.5]])}
    feat = lambda s: (coef[s] @ v.T + r)[None]  # noqa: E731   [1 row, 1 token, 6 channels]
    beta = 0.6
    f = _forecaster(v, mode, beta)
    state = None
    for s in (0, 2, 5):
        state = f.update(state, feat(s), float(s), (("double_block", 0), "img_attn"))
    out = torch.empty(1, 1, 6)
    f.predict(state, 8.0, out)
    c0, c2, c5 = coef[0], coef[2], coef[5]
    if mode == "trend":
        g1, g2 = (c2 - c0) / 2, (c5 - c2) / 3
        c_hat = c5 + 3 * (beta * g1 + (1 - beta) * g2)
    elif mode == "level":
        l0 = c0
        l2 = beta * l0 + (1 - beta) * c2
        c_hat = beta * l2 + (1 - beta) * c5
    else:
        l2, t2 = c2, (c2 - c0) / 2
        l5 = (1 - beta) * c5 + beta * (l2 + 3 * t2)
        t5 = (1 - beta) * (l5 - l2) / 3 + beta * t2
        c_hat = l5 + 3 * t5
    want = c_hat @ v.T + r
    assert torch.allclose(out[0], want, atol=1e-5), (out, want)
    # at the position of the last full compute the forecast is that feature
    assert torch.equal(f.predict(state, 5.0, torch.empty(1, 1, 6)), feat(5))


def test_trend_waits_for_two_full_computes_and_heun_refresh_keeps_the_trend():
    v, _ = _fake_basis()
    f = _forecaster(v, "trend", 0.9)
    slot = (("single_block", 1), "total")
    one = f.update(None, torch.ones(1, 2, 6), 0.0, slot)
    assert torch.equal(f.predict(one, 3.0, torch.empty(1, 2, 6)), torch.ones(1, 2, 6))   # reuse until a slope exists
    two = f.update(one, 2 * torch.ones(1, 2, 6), 1.0, slot)
    again = f.update(two, 3 * torch.ones(1, 2, 6), 1.0, slot)                           # same position: refresh F, C
    assert torch.equal(again.trend, two.trend) and torch.equal(again.terms[0], 3 * torch.ones(1, 2, 6))


def test_same_model_twice_clones_and_conds_share_no_state():
    basis, _ = _basis("flux")
    model = apply_svdcache(tm.make_model("flux"), basis=basis, interval=4, warmup_steps=2)
    first, second = _sample(model, "flux"), _sample(model, "flux")
    assert torch.equal(first, second)
    assert SVDCACHE_KEY + "_run" not in model.model_options["transformer_options"]
    clone = model.clone()
    assert clone.model_options["transformer_options"][SVDCACHE_KEY].basis is basis       # shared, not copied
    assert torch.equal(_sample(clone, "flux"), first)


def test_batched_and_split_cond_uncond_give_the_same_result():
    basis, _ = _basis("flux")
    model = apply_svdcache(tm.make_model("flux"), basis=basis, interval=4, warmup_steps=2)
    batched = _sample(model, "flux")
    factor = model.model.memory_usage_factor
    model.model.memory_usage_factor = 1e9     # forces cond and uncond into separate calls
    try:
        split = _sample(model, "flux")
    finally:
        model.model.memory_usage_factor = factor
    assert torch.allclose(split, batched, atol=1e-5, rtol=1e-5)


def test_non_finite_forecast_falls_back_to_a_full_compute(info_log):
    basis, _ = _basis("flux")
    model = apply_svdcache(tm.make_model("flux"), basis=basis, interval=4, warmup_steps=2)
    clean = _sample(model, "flux")
    poisoned = model.clone()
    done = []

    def poison(executor, *args, **kwargs):
        run = args[-1][SVDCACHE_KEY + "_run"]
        if not done and run.evaluation(args[-1]["sigmas"][0]).mode == "forecast":
            for entry in run.store._entries.values():
                for state in entry.values():
                    state.terms[0] = torch.full_like(state.terms[0], float("nan"))
            done.append(True)
        return executor(*args, **kwargs)

    poisoned.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test_poison", poison)
    info_log.clear()
    out = _sample(poisoned, "flux")
    assert done and torch.isfinite(out).all()
    assert "1 non-finite forecasts recomputed in full" in _summaries(info_log)[0][0]
    assert _rel_err(out, clean) < 0.3


def test_one_feature_cache_per_model():
    basis, _ = _basis("flux")
    model = apply_svdcache(tm.make_model("flux"), basis=basis, interval=4, warmup_steps=2)
    opts = model.model_options["transformer_options"]
    assert SVDCACHE_KEY in opts and HICACHE_KEY not in opts
    with pytest.raises(ValueError, match="HiCache cannot be applied to a model that already has SVD-Cache"):
        apply_hicache(model)
    with pytest.raises(ValueError, match="SVD-Cache calibration cannot be applied to a model that already has SVD-Cache"):
        calibrate(model, *_inputs("flux")[:2], {"samples": _inputs("flux")[2]}, 2, 1.0, 0)


# -- bad inputs ---------------------------------------------------------------------------------
def test_basis_of_another_family_is_refused_naming_both():
    basis, _ = _basis("flux")
    with pytest.raises(ValueError, match=r"calibrated on a flux model, this model is qwen_image.*SVD-Cache calibrate"):
        apply_svdcache(tm.make_model("qwen_image"), basis=basis)


def test_basis_of_another_width_or_layout_is_refused_naming_both():
    basis, _ = _basis("flux")
    wider = SVDBasis({s: basis.basis(s) for s in basis.layout}, dict(basis._energy), dict(basis.meta, hidden_size=128))
    with pytest.raises(ValueError, match=r"hidden size 128, this flux model has 64"):
        apply_svdcache(tm.make_model("flux"), basis=wider)
    fewer = SVDBasis({s: basis.basis(s) for s in basis.layout[:-1]}, dict(basis._energy),
                     dict(basis.meta, slots=basis.meta["slots"][:-1]))
    with pytest.raises(ValueError, match=r"slot layout of 9 slots in 2 double blocks, 1 single blocks, this model "
                                         r"has 10 slots in 2 double blocks, 2 single blocks.*single_block\.1\.total"):
        apply_svdcache(tm.make_model("flux"), basis=fewer)


def test_unsupported_model_and_missing_basis_are_named(pack_nodes):
    node = pack_nodes["FastDiTSVDCache"]
    kw = dict(interval=7, beta=0.9, ema_mode="trend", warmup_steps=3, start_percent=0.0, end_percent=1.0)
    with pytest.raises(ValueError, match=r"needs a basis: connect 'SVD-Cache calibrate \(one-time basis\)'"):
        node.execute(model=tm.make_model("flux"), **kw)
    basis, _ = _basis("flux")
    with pytest.raises(ValueError, match=r"SVD-Cache does not support this model \(UNetModel.*Supported model families"):
        node.execute(model=tm.make_model("sd15"), basis=basis, **kw)
    with pytest.raises(ValueError, match="ema_mode must be one of trend, level, holt"):
        SVDCacheConfig(basis=basis, ema_mode="ewma")


def test_basis_files_missing_truncated_foreign_are_named(tmp_path):
    basis, _ = _basis("flux")
    good = basis.save(str(tmp_path / "good.safetensors"))
    loaded = SVDBasis.load(good)
    assert loaded.layout == basis.layout and loaded.meta["tau"] == 0.85 and loaded.meta["family"] == "flux"
    assert all(torch.equal(loaded.basis(s), basis.basis(s)) for s in basis.layout)
    for key in ("hidden_size", "tau", "steps", "interval", "resolution", "prompt_hash", "pack_version"):
        assert key in loaded.meta, key
    with pytest.raises(ValueError, match=r"basis file nothing\.safetensors not found"):
        SVDBasis.load(str(tmp_path / "nothing.safetensors"))
    data = open(good, "rb").read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"basis file cut\.safetensors is not a readable safetensors file"):
        SVDBasis.load(str(cut))
    junk = tmp_path / "model.ckpt"
    junk.write_bytes(b"PK\x03\x04 not a safetensors file at all")
    with pytest.raises(ValueError, match=r"basis file model\.ckpt is not a readable safetensors file"):
        SVDBasis.load(str(junk))
    from safetensors.torch import save_file
    other = tmp_path / "lora.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match=r"lora\.safetensors is a safetensors file but not an SVD-Cache basis"):
        SVDBasis.load(str(other))


def _graph(family="flux", svd_inputs=None, steps=12, tau=0.85):
    frames = 3 if family in VIDEO else 1

    def ksampler(model):
        return {"class_type": "KSampler", "inputs": {"model": [model, 0], "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["1", 3], "seed": 3, "steps": steps, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}

    svd = {"model": ["1", 0], "interval": 4, "beta": 0.9, "ema_mode": "trend", "warmup_steps": 2, "start_percent": 0.0, "end_percent": 1.0}
    svd.update(svd_inputs if svd_inputs is not None else {"basis": ["2", 0]})
    return {
        "1": {"class_type": "FastDiTTestModel", "inputs": {"family": family, "seed": 0, "width": 16, "height": 16, "frames": frames, "batch_size": 1}},
        "2": {"class_type": "FastDiTSVDCacheCalibrate", "inputs": {"model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2], "latent": ["1", 3], "steps": steps, "cfg": 2.0, "seed": 3, "interval": 4, "tau": tau, "warmup_steps": 2}},
        "3": {"class_type": "FastDiTSVDCache", "inputs": svd},
        "4": ksampler("1"),
        "5": ksampler("3"),
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 4]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 4]}},
        "8": {"class_type": "FastDiTCompare", "inputs": {"reference": ["6", 0], "candidate": ["7", 0]}},
    }


def test_graph_calibrates_saves_and_patches(info_log):
    import folder_paths
    psnr = execute(_graph())["8"]["fastdit_metrics"][0]["psnr"]
    assert psnr != "inf" and float(psnr) > 10
    saved = folder_paths.get_filename_list("fastdit_svd_bases")
    assert any(n.startswith("flux_d64_16x16_N4_tau0.85_") for n in saved), saved
    # the saved file, picked by name, gives the same image as the basis passed along the graph
    name = [n for n in saved if n.startswith("flux_d64_16x16_N4_tau0.85_")][0]
    graph = _graph(svd_inputs={"basis_file": name})
    del graph["2"]
    assert execute(graph)["8"]["fastdit_metrics"][0]["psnr"] == psnr


def test_graph_refuses_tau_outside_the_unit_interval():
    with pytest.raises(GraphError, match=r"value_bigger_than_max.*Value 1.5 bigger than max of 1.0.*tau"):
        execute(_graph(tau=1.5))
    with pytest.raises(GraphError, match=r"value_smaller_than_min.*Value 0.0 smaller than min of 0.01.*tau"):
        execute(_graph(tau=0.0))


def test_graph_names_a_missing_basis_file():
    graph = _graph(svd_inputs={"basis_file": "gone.safetensors"})
    del graph["2"]
    with pytest.raises(GraphError, match="gone.safetensors"):
        execute(graph)


def test_cpu_offloaded_cache_gives_the_same_image():
    basis, _ = _basis("qwen_image")
    model = tm.make_model("qwen_image")
    on_device = _sample(apply_svdcache(model, basis=basis, interval=4, warmup_steps=2), "qwen_image")
    offloaded = _sample(apply_svdcache(model, basis=basis, interval=4, warmup_steps=2, cache_device="cpu"),
                        "qwen_image")
    assert torch.equal(offloaded, on_device)


def _halve_attention(attn, extra_options):
    return attn * 0.5


def test_blocks_without_module_math_reuse_their_output_change(info_log):
    """Attention patches force block granularity: those slots have no basis and are reused (FORA)."""
    basis, _ = _basis("flux")
    model = tm.make_model("flux").clone()
    model.set_model_attn1_output_patch(_halve_attention)
    base = _sample(model, "flux")
    assert torch.equal(_sample(apply_svdcache(model, basis=basis, interval=1), "flux"), base)
    info_log.clear()
    out = _sample(apply_svdcache(model, basis=basis, interval=4, warmup_steps=2), "flux")
    reuse = _sample(apply_hicache(model, mode="reuse", granularity="block", interval=4, warmup_steps=2), "flux")
    assert torch.equal(out, reuse)
    assert "block granularity for every block: attention patches" in _summaries(info_log)[0][0]
