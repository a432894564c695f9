"""The bench harness: configuration registry, one-process runs, table, JSON and grid."""
import json
import os

import pytest
from PIL import Image

from bench import configs as registry
from bench import fidelity
from bench.configs import Config, register


def test_spec_parsing_types_values():
    name, opts = registry.parse_spec("hicache:interval=7,order=2.5,flag=true,mode=fast")
    assert name == "hicache" and opts == {"interval": 7, "order": 2.5, "flag": True, "mode": "fast"}
    assert registry.parse_spec("baseline") == ("baseline", {})
    with pytest.raises(ValueError, match="expected key=value"):
        registry.parse_spec("easycache:0.3")


def test_unknown_config_and_option_are_named():
    with pytest.raises(ValueError, match="unknown bench configuration 'nope'.*baseline.*easycache"):
        registry.build("nope")
    with pytest.raises(ValueError, match="easycache:speed=3"):
        registry.build("easycache:speed=3")
    assert registry.build("easycache:reuse_threshold=0.5").name == "easycache:reuse_threshold=0.5"
    assert {"baseline", "easycache"} <= set(registry.available())


class HalfSteps(Config):
    """A sampler-type configuration: half the steps of the baseline."""

    def sample(self, model, noise, positive, negative, latent, steps, cfg, seed):
        return super().sample(model, noise, positive, negative, latent, steps // 2, cfg, seed)


@register("test_half_steps")
def _half_steps():
    return HalfSteps("half steps")


@register("test_skip_block")
def _skip_block(index=0):
    def prepare(model):
        m = model.clone()
        m.set_model_patch_replace(lambda args, extra: args, "dit", "single_block", index)
        return m
    return Config("test_skip_block", prepare=prepare)


def test_run_measures_every_configuration_against_the_baseline(tmp_path):
    logs = []
    res = fidelity.run("tiny-flux", ["test_half_steps", "easycache:reuse_threshold=1.5,start_percent=0.0",
                                     "test_skip_block:index=1"],
                       steps=8, size=(16, 16), n_prompts=1, seeds=[0, 1], out=str(tmp_path), log=logs.append)
    rows = {r["config"]: r for r in res["rows"]}
    assert list(rows) == ["baseline", "half steps", "easycache:reuse_threshold=1.5,start_percent=0.0",
                          "test_skip_block:index=1"]
    base = rows["baseline"]
    assert base["psnr"] == "inf" and base["ssim"] == pytest.approx(1.0) and base["cost_ratio"] == 1.0
    assert rows["half steps"]["cost_ratio"] == pytest.approx(0.5)
    assert rows["half steps"]["psnr"] != "inf" and rows["half steps"]["ssim"] < 1
    assert rows["easycache:reuse_threshold=1.5,start_percent=0.0"]["cost_ratio"] < 1  # ComfyUI's EasyCache skipped steps
    assert 0.7 < rows["test_skip_block:index=1"]["cost_ratio"] < 1  # 1 of 4 blocks, embedders still run
    assert res["image_tokens"] == 64 and len(res["jobs"]) == 2
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][1]["flops_per_image"] == rows["half steps"]["flops_per_image"]
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[0] >= 4 * 96 and grid.size[1] >= 2 * 96  # 4 configurations x 2 jobs
    assert "PSNR dB" in logs[-1] and "half steps" in logs[-1]


def test_cli_lists_and_runs(tmp_path, capsys):
    assert fidelity.main(["--list"]) == 0
    assert "easycache" in capsys.readouterr().out
    out = str(tmp_path / "cli")
    assert fidelity.main(["--model", "tiny-flux_kontext", "--configs", "easycache", "--steps", "3", "--size", "8",
                          "--prompts", "1", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "tiny-flux_kontext: 8x8 latent (16 image tokens)" in text and "easycache" in text
    assert os.path.exists(os.path.join(out, "grid.png"))


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="tiny-flux, tiny-flux_kontext"):
        fidelity.run("tiny-sdxl", ["baseline"], steps=1, size=(8, 8), n_prompts=1)


def test_demo_models_report_scene_accuracy_and_unedited_psnr():
    flux = fidelity.run("demo-flux", ["baseline"], steps=2, size=(8, 8), n_prompts=1, warmup=False, log=lambda s: None)
    row = flux["rows"][0]
    assert 0 <= row["scene_accuracy"] <= 1 and 0 <= row["shape_accuracy"] <= 1
    edit = fidelity.run("demo-kontext", ["baseline"], steps=2, size=(8, 8), n_prompts=1, warmup=False,
                        log=lambda s: None)
    assert edit["rows"][0]["unedited_psnr"] != "inf" and edit["rows"][0]["unedited_psnr"] > 0
    assert " | make the" in edit["jobs"][0]["label"] or " | remove the" in edit["jobs"][0]["label"] \
        or " | move the" in edit["jobs"][0]["label"]


def test_easycache_row_protects_fp32_latents_from_comfyuis_in_place_add():
    """0.3.75's EasyCache adds its cached difference to the network input in place; with an fp32
    model that input is the sampler's own latent. The bench row hands it a copy by default."""
    res = fidelity.run("tiny-flux", ["easycache:reuse_threshold=1.5", "easycache:reuse_threshold=1.5,copy_input=false"],
                       steps=30, size=(16, 16), n_prompts=1, warmup=False, log=lambda s: None)
    copied, raw = res["rows"][1], res["rows"][2]
    assert copied["cost_ratio"] < 0.6 and raw["cost_ratio"] < 0.6   # both skip steps
    assert copied["psnr"] > raw["psnr"] + 10                          # only the unprotected one is corrupted


def test_a_demo_weights_file_is_benched_as_its_task(tmp_path):
    from demo import models
    path = str(tmp_path / "snapshot.safetensors")
    models.new().save(path, task="kontext")
    res = fidelity.run(path, ["baseline"], steps=1, size=(8, 8), n_prompts=1, warmup=False, log=lambda s: None)
    assert res["model"] == "snapshot.safetensors" and "unedited_psnr" in res["rows"][0]


def test_euler_rows_and_matched_cost():
    """euler:steps=N is the baseline sampler at N steps (at the bench's own step count it IS the
    baseline); with matched costs every technique row names the Euler run nearest its FLOPs."""
    from bench.configs.core import matched_euler_steps
    assert matched_euler_steps(50, 5.43) == 9 and matched_euler_steps(50, 2.86) == 17
    assert matched_euler_steps(20, 100.0) == 1
    with pytest.raises(ValueError, match="whole number of steps"):
        registry.build("euler:steps=0")
    res = fidelity.run("tiny-flux", ["euler:steps=8", "test_half_steps", "test_skip_block:index=1"], steps=8,
                       size=(16, 16), n_prompts=1, seeds=[0], warmup=False, log=lambda s: None, matched=True)
    rows = {r["config"]: r for r in res["rows"]}
    assert rows["euler:steps=8"]["psnr"] == "inf" and rows["euler:steps=8"]["cost_ratio"] == 1.0
    half = rows["half steps"]
    assert half["matched_euler"]["config"] == "euler:steps=4"          # 8 steps / 2x
    assert rows["euler:steps=4"]["cost_ratio"] == pytest.approx(0.5)
    assert half["matched_euler"]["psnr"] == rows["euler:steps=4"]["psnr"]
    skip = rows["test_skip_block:index=1"]
    n = matched_euler_steps(8, skip["flops_speedup"])
    assert skip["matched_euler"]["config"] == f"euler:steps={n}" and f"euler:steps={n}" in rows
    assert "matched_euler" not in rows["baseline"] and "matched_euler" not in rows["euler:steps=8"]
    assert "matched Euler" in fidelity.format_table(res)


class SleepsThenSamples(Config):
    """Waits 0.5 s of wall time (no CPU) before sampling like the baseline."""

    def sample(self, model, noise, positive, negative, latent, steps, cfg, seed):
        import time
        time.sleep(0.5)
        return super().sample(model, noise, positive, negative, latent, steps, cfg, seed)


@register("test_sleeps")
def _sleeps():
    return SleepsThenSamples("test_sleeps")


def test_cpu_clock_leaves_out_time_the_process_did_not_compute():
    """--clock cpu times each image by the process's CPU time: a row that waits 0.5 s without
    computing takes at least 0.5 s on the wall clock (a bound on the row itself: on a loaded machine
    the baseline's own wall time varies by more than a fraction of the wait) and, on the CPU clock,
    as long as the baseline."""
    kw = dict(steps=2, size=(8, 8), n_prompts=1, warmup=False, log=lambda s: None)
    wall = {r["config"]: r for r in fidelity.run("tiny-flux", ["baseline", "test_sleeps"], **kw)["rows"]}
    cpu_run = fidelity.run("tiny-flux", ["baseline", "test_sleeps"], clock="cpu", **kw)
    cpu = {r["config"]: r for r in cpu_run["rows"]}
    assert wall["test_sleeps"]["seconds_per_image"] >= 0.5
    assert abs(cpu["test_sleeps"]["seconds_per_image"] - cpu["baseline"]["seconds_per_image"]) < 0.2
    assert cpu_run["clock"] == "cpu" and "process CPU time" in fidelity.format_table(cpu_run)
    with pytest.raises(ValueError, match="clock must be one of cpu, wall"):
        fidelity.run("tiny-flux", ["baseline"], clock="gpu", **kw)


def test_step_costs_splits_full_and_forecast_steps_and_measures_the_floor():
    import torch

    from bench import step_costs
    from fastdit.caching import TaylorCacheConfig
    from fastdit.caching.schedule import StepPlan, resolve_schedule
    lines = []
    rows = step_costs.run("tiny-flux", ["hicache:interval=3,warmup_steps=2"], steps=10, size=(16, 16), reps=1,
                          log=lines.append)
    base, floor, cached = rows
    assert [r["config"] for r in rows] == ["baseline", "outside the blocks", "hicache:interval=3,warmup_steps=2"]
    assert (base["full_steps"], base["forecast_steps"]) == (10, 0)
    assert (floor["full_steps"], floor["forecast_steps"]) == (0, 10)  # no block ran: no block FLOPs
    assert floor["seconds"] < base["seconds"]
    plan = StepPlan(torch.linspace(1, 0, 11).tolist(), *resolve_schedule(TaylorCacheConfig(interval=3, warmup_steps=2), 10))
    assert cached["full_steps"] == plan.full_steps and cached["forecast_steps"] == 10 - plan.full_steps > 0
    assert cached["forecast_ms"] < cached["full_ms"]
    assert "outside the blocks" in lines[0]
    with pytest.raises(ValueError, match="fresco.*per-step callback"):
        step_costs.run("tiny-flux", ["fresco"], steps=4, size=(16, 16), reps=1, log=lines.append)


def test_the_default_rows_are_those_that_run_at_their_defaults_on_the_model_kind():
    """`make demo` benches every configuration there is: those that need options (euler: steps) or
    an edit model (SpecEdit) are left out of a text-to-image bench, and every one left in runs."""
    names = registry.defaults(edit_model=False)
    assert {"baseline", "easycache", "hicache", "svdcache", "fresco"} <= set(names)
    assert "euler" not in names and "specedit" not in names
    assert "specedit" in registry.defaults(edit_model=True)
    real = [n for n in names if n != "baseline" and not n.startswith("test_")]
    res = fidelity.run("tiny-flux", real, steps=4, size=(8, 8), n_prompts=1, warmup=False, log=lambda *_: None)
    rows = {r["config"]: r for r in res["rows"]}
    assert set(real) <= set(rows) and all(rows[n]["cost_ratio"] > 0 for n in real)
