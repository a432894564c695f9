"""The HiCache bench scripts run (small settings) and report what the schedule implies."""
import json

import pytest


def test_gpu_bench_runs_on_cpu_with_tiny(tmp_path):
    from bench import gpu_bench
    result = gpu_bench.main(["--tiny", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert [r["case"] for r in saved["cases"]] == [c.name for c in gpu_bench.CASES]
    assert all(r["finite"] and r["wall_s"] > 0 for r in result["cases"])
    assert result["cases"][0]["rel_err_vs_baseline"] == 0.0
    assert 0 < result["cases"][1]["rel_err_vs_baseline"] < 0.5
    assert result["kernel"]["backend"] == "torch" and result["kernel"]["forecast_GBps"] > 0


def test_harness_rows_for_hicache_and_its_baselines():
    from bench import fidelity
    res = fidelity.run("tiny-flux", ["hicache:interval=7", "hicache:interval=7,mode=reuse",
                                     "hicache:interval=7,granularity=block"],
                       steps=20, size=(8, 8), n_prompts=1, seeds=(0,), warmup=False, log=lambda *a: None)
    rows = {r["config"]: r for r in res["rows"]}
    assert rows["baseline"]["flops_speedup"] == 1.0 and rows["baseline"]["psnr"] == "inf"
    # 20 steps, warm-up 3, N=7: blocks run at 5 of 20 steps (4x); embedders, modulation and the final
    # layer run every step, so the counted FLOPs speed-up is a little lower
    for name in ("hicache:interval=7", "hicache:interval=7,mode=reuse", "hicache:interval=7,granularity=block"):
        assert 3.0 < rows[name]["flops_speedup"] < 4.0, name
        assert 10 < rows[name]["psnr"] < 80, name


def test_bench_config_spec_builds_and_validates():
    from bench import configs
    from fastdit.testing import tiny_models as tm
    assert "hicache" in configs.available() and "hicache" not in configs.IMPORT_ERRORS
    cfg = configs.build("hicache:interval=5,mode=taylorseer")
    assert cfg.name == "hicache:interval=5,mode=taylorseer"
    patched = cfg.prepare(tm.make_model("flux"))
    assert patched.model_options["transformer_options"]["fastdit_hicache"].mode == "taylorseer"
    with pytest.raises(ValueError, match="hicache, hi-taylor, taylorseer, reuse"):
        configs.build("hicache:mode=fora")
