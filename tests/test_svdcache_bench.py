"""SVD-Cache in the bench harness (its ablation rows) and in the GPU bench script (CPU --tiny mode)."""
import json

import pytest


def test_gpu_bench_has_an_svdcache_row_and_the_lowrank_probe(tmp_path):
    from bench import gpu_bench
    result = gpu_bench.main(["--tiny", "--out", str(tmp_path), "--repeats", "1"])
    rows = {r["case"]: r for r in json.loads((tmp_path / "gpu_bench.json").read_text())["cases"]}
    row = rows["svdcache N=7 (trend, tau 0.85)"]
    assert row["finite"] and 0 < row["rel_err_vs_baseline"] < 1.0
    lr = result["lowrank"]
    assert lr["backend"] == "torch" and lr["fused_GBps"] > 0 and lr["k"] == 16


def test_harness_rows_for_svdcache_and_its_ablations():
    from bench import fidelity
    specs = ["svdcache:calib_size=8,calib_steps=20", "svdcache:calib_size=8,calib_steps=20,ema_mode=level",
             "svdcache:subspace=none", "svdcache:basis=same", "hicache:interval=7,mode=reuse"]
    res = fidelity.run("tiny-flux", specs, steps=20, size=(8, 8), n_prompts=1, seeds=(0,), warmup=False,
                       log=lambda *a: None)
    rows = {r["config"]: r for r in res["rows"]}
    for name in specs:
        assert 3.0 < rows[name]["flops_speedup"] < 4.0, name       # 20 steps, N=7: 5 full steps
        assert 5 < rows[name]["psnr"] < 80, name
    # no decomposition is plain reuse, bit for bit
    assert rows["svdcache:subspace=none"]["psnr"] == rows["hicache:interval=7,mode=reuse"]["psnr"]


def test_bench_config_validates():
    from bench import configs
    assert "svdcache" in configs.available() and "svdcache" not in configs.IMPORT_ERRORS
    with pytest.raises(ValueError, match="trend, level, holt"):
        configs.build("svdcache:ema_mode=ewma")
    with pytest.raises(ValueError, match="basis must be other or same"):
        configs.build("svdcache:basis=mine")
