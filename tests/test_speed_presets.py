"""Speed presets of the feature caches: interval and warm-up derived from the run's step count."""
import logging
import re

import pytest
import torch

import comfy.sample
from fastdit.caching import TaylorCacheConfig, apply_hicache
from fastdit.caching.schedule import (FULL, SPEED_PRESETS, StepPlan, plan_speedup, preset_schedule,
                                      resolve_schedule, taylorseer_plan)
from fastdit.caching.svd import CalibrationConfig, SVDCacheConfig
from fastdit.testing import tiny_models as tm
from fastdit.testing.comfy_env import execute

PRESETS = [p for p in SPEED_PRESETS if p != "custom"]
BY_SPEED = ["2x", "3x", "4x", "auto"]   # slowest to fastest
SUMMARY = re.compile(r"HiCache \((.*?)\): (\d+) steps, (\d+) model evaluations = (\d+) full \+ (\d+) forecast")


def _full_steps(n, speed):
    interval, warmup = preset_schedule(speed, n)
    return [s for s, m in enumerate(taylorseer_plan([True] * n, interval, warmup)) if m == FULL]


def test_auto_is_the_papers_setting_at_50_steps():
    assert preset_schedule("auto", 50) == (7, 3)
    assert _full_steps(50, "auto") == [0, 1, 2, 9, 16, 23, 30, 37, 44]


@pytest.mark.parametrize("n,expected", [(20, {"auto": (3, 2), "2x": (2, 2), "3x": (3, 2), "4x": (3, 2)}),
                                        (30, {"auto": (4, 2), "2x": (2, 2), "3x": (3, 2), "4x": (4, 2)}),
                                        (50, {"auto": (7, 3), "2x": (2, 3), "3x": (3, 3), "4x": (5, 3)}),
                                        (100, {"auto": (14, 6), "2x": (2, 6), "3x": (3, 6), "4x": (5, 6)})])
def test_schedules_at_common_step_counts(n, expected):
    assert {p: preset_schedule(p, n) for p in PRESETS} == expected


def test_monotone_in_the_preset_and_never_beyond_auto():
    for n in range(1, 151):
        speeds = [plan_speedup(n, *preset_schedule(p, n)) for p in BY_SPEED]
        intervals = [preset_schedule(p, n)[0] for p in BY_SPEED]
        assert speeds == sorted(speeds) and intervals == sorted(intervals), n
        assert len({preset_schedule(p, n)[1] for p in PRESETS}) == 1  # one warm-up per step count


def test_presets_reach_their_target_where_the_span_allows():
    # at 50 steps: 1.92x / 2.78x / 4.17x for 2x / 3x / 4x (the nearest plans)
    assert [round(plan_speedup(50, *preset_schedule(p, 50)), 2) for p in ("2x", "3x", "4x")] == [1.92, 2.78, 4.17]
    for n in range(11, 151):
        assert 1.7 <= plan_speedup(n, *preset_schedule("2x", n)) <= 2.0, n


def test_warmup_scales_with_the_step_count():
    warmups = {n: preset_schedule("auto", n)[1] for n in (1, 2, 10, 20, 30, 41, 42, 50, 100, 200)}
    assert warmups == {1: 1, 2: 2, 10: 2, 20: 2, 30: 2, 41: 2, 42: 3, 50: 3, 100: 6, 200: 12}


@pytest.mark.parametrize("n", range(1, 11))
def test_few_steps_compute_everything_in_full(n):
    for p in PRESETS:
        assert _full_steps(n, p) == list(range(n)), (p, n)


def test_at_most_one_forecast_in_a_row_below_15_steps():
    for n in range(11, 15):
        interval, warmup = preset_schedule("auto", n)
        assert interval == 2 and plan_speedup(n, interval, warmup) < 2


def test_unknown_preset_names_the_allowed_ones():
    with pytest.raises(ValueError, match="speed must be one of auto, 2x, 3x, 4x, custom, not '6x'"):
        preset_schedule("6x", 30)
    with pytest.raises(ValueError, match="auto, 2x, 3x, 4x, custom"):
        TaylorCacheConfig(speed="fast")
    with pytest.raises(ValueError, match="auto, 2x, 3x, 4x, custom"):
        SVDCacheConfig(subspace="none", speed="2")


def test_resolve_uses_the_config_with_custom_or_no_speed_field():
    assert resolve_schedule(TaylorCacheConfig(interval=5, warmup_steps=1), 30) == (5, 1)
    assert resolve_schedule(TaylorCacheConfig(interval=5, warmup_steps=1, speed="auto"), 30) == (4, 2)
    assert resolve_schedule(SVDCacheConfig(subspace="none", interval=9, speed="3x"), 50) == (3, 3)
    assert resolve_schedule(CalibrationConfig(6, 2, observer=None), 20) == (6, 2)


def test_describe_with_and_without_the_resolved_values():
    auto = TaylorCacheConfig(speed="auto")
    assert auto.describe() == "hicache, speed auto, O=2, σ=0.5, module"
    assert auto.describe(*resolve_schedule(auto, 30)) == "hicache, speed auto: N=4, warm-up 2, O=2, σ=0.5, module"
    assert TaylorCacheConfig().describe() == "hicache, N=7, warm-up 3, O=2, σ=0.5, module"
    svd = SVDCacheConfig(subspace="none", speed="2x")
    assert svd.describe(*resolve_schedule(svd, 20)).startswith("trend, speed 2x: N=2, warm-up 2, β=0.3")


def _sample(model, steps):
    pos, neg = tm.conditioning("flux", 0), tm.conditioning("flux", 1)
    latent = torch.zeros(tm.latent_shape("flux", 16, 16))
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), steps, 2.0, "euler", "simple", pos, neg,
                               latent, disable_pbar=True)


def _runs(caplog):
    return [SUMMARY.search(r.getMessage()).groups() for r in caplog.records if r.getMessage().startswith("HiCache (")]


def test_auto_at_50_steps_gives_the_papers_run_bit_for_bit(caplog):
    caplog.set_level(logging.INFO)
    model = tm.make_model("flux")
    paper = _sample(apply_hicache(model), 50)
    auto = _sample(apply_hicache(model, speed="auto"), 50)
    assert torch.equal(auto, paper)
    assert [r[1:] for r in _runs(caplog)] == [("50", "50", "9", "41")] * 2


def _graph(hicache_inputs, steps):
    cache = {"model": ["1", 0], "interval": 4, "order": 2, "sigma": 0.5, "warmup_steps": 1, "mode": "hicache",
             "start_percent": 0.0, "end_percent": 1.0, "granularity": "module"}
    return {
        "1": {"class_type": "FastDiTTestModel", "inputs": {"family": "flux", "seed": 0, "width": 16, "height": 16,
                                                           "frames": 1, "batch_size": 1}},
        "2": {"class_type": "FastDiTHiCache", "inputs": dict(cache, **hicache_inputs)},
        "3": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["1", 1], "negative": ["1", 2],
                                                   "latent_image": ["1", 3], "seed": 3, "steps": steps, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 4]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


@pytest.mark.parametrize("inputs,steps,full", [
    ({}, 12, [0, 4, 8]),                         # a prompt saved before the preset existed: the widgets, as before
    ({"speed": "custom"}, 12, [0, 4, 8]),
    ({"speed": "auto"}, 12, [0, 1, 3, 5, 7, 9, 11]),   # N=2, warm-up 2
    ({"speed": "auto"}, 20, [0, 1, 4, 7, 10, 13, 16, 19]),   # N=3, warm-up 2
    ({"speed": "2x"}, 8, list(range(8))),      # few steps: everything in full
])
def test_node_resolves_the_preset_from_the_samplers_steps(caplog, inputs, steps, full):
    caplog.set_level(logging.INFO)
    execute(_graph(inputs, steps))
    (run,) = _runs(caplog)
    assert run[1:] == (str(steps), str(steps), str(len(full)), str(steps - len(full)))
    interval, warmup = _resolved(inputs, steps)
    assert f"N={interval}, warm-up {warmup}" in run[0]   # the line names the schedule that ran
    assert [s for s, m in enumerate(StepPlan(torch.linspace(1, 0, steps + 1), *_resolved(inputs, steps)).modes)
            if m == FULL] == full


def _resolved(inputs, steps):
    speed = inputs.get("speed", "custom")
    return (4, 1) if speed == "custom" else preset_schedule(speed, steps)


def test_node_schema_puts_an_optional_speed_last(pack_nodes):
    for node_id in ("FastDiTHiCache", "FastDiTSVDCache", "FastDiTSVDCacheCalibrate"):
        schema = pack_nodes[node_id].define_schema()
        speed = schema.inputs[-1]
        assert speed.id == "speed" and speed.optional and speed.default == "auto"
        assert list(speed.options) == list(SPEED_PRESETS)
        assert "custom" in speed.tooltip and "steps" in speed.tooltip
        tips = {i.id: i.tooltip for i in schema.inputs}
        assert "only with speed = custom" in tips["interval"] and "only with speed = custom" in tips["warmup_steps"]


def test_calibration_node_records_the_full_steps_of_the_preset(pack_nodes):
    pos, neg = tm.conditioning("flux", 0), tm.conditioning("flux", 1)
    latent = {"samples": torch.zeros(tm.latent_shape("flux", 16, 16))}
    node = pack_nodes["FastDiTSVDCacheCalibrate"]
    basis = node.execute(tm.make_model("flux"), pos, neg, latent, 12, 2.0, 0, 9, 0.85, speed="auto").result[0]
    assert basis.meta["interval"] == 2 and basis.meta["full_steps"] == [0, 1, 3, 5, 7, 9, 11]
    basis = node.execute(tm.make_model("flux"), pos, neg, latent, 12, 2.0, 0, 9, 0.85, warmup_steps=1).result[0]
    assert basis.meta["interval"] == 9 and basis.meta["full_steps"] == [0, 9]   # custom: the widgets


def test_a_preset_at_n2_forecasts_with_taylor_coefficients(caplog):
    """One step ahead (a preset resolving to N=2) the run uses TaylorSeer's undamped coefficients: the
    same run, bit for bit, as mode taylorseer at N=2 with the preset's warm-up; the log line says so.
    A custom N=2 keeps HiCache's Hermite coefficients, and presets at longer spans keep them too."""
    caplog.set_level(logging.INFO)
    model = tm.make_model("flux")
    preset = _sample(apply_hicache(model, speed="2x", warmup_steps=2), 20)  # differences start as below
    taylor = _sample(apply_hicache(model, interval=2, warmup_steps=2, mode="taylorseer"), 20)
    hermite = _sample(apply_hicache(model, interval=2, warmup_steps=2), 20)
    assert torch.equal(preset, taylor)
    assert not torch.equal(preset, hermite)
    settings = [r[0] for r in _runs(caplog)]
    assert settings[0] == "hicache, speed 2x: N=2, warm-up 2 (one step ahead: taylorseer coefficients), O=2, module"
    assert settings[2] == "hicache, N=2, warm-up 2, O=2, σ=0.5, module"
    auto = TaylorCacheConfig(speed="auto")
    assert auto.describe(*resolve_schedule(auto, 30)) == "hicache, speed auto: N=4, warm-up 2, O=2, σ=0.5, module"
    assert TaylorCacheConfig(speed="2x", mode="reuse").describe(2, 2) == "reuse, speed 2x: N=2, warm-up 2, O=0, module"
