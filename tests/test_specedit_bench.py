"""SpecEdit's bench (bench/specedit.py) on one demo-kontext edit: the columns its table reports."""
import math


def test_bench_rows_report_cost_regions_and_the_blend_ring():
    from bench import specedit
    res = specedit.run(edits=1, size=16, steps=6, specs=("specedit:steps=6,fraction=0.4,resolution=coarse",), matched=False, log=lambda *a: None)
    rows = {r["config"]: r for r in res["rows"]}
    base, spec = rows["baseline"], rows["specedit:steps=6,fraction=0.4,resolution=coarse"]
    assert base["psnr"] == math.inf and base["psnr_ring"] == math.inf and base["cost_ratio"] == 1.0
    assert spec["cost_ratio"] > 1.2                                  # the draft and the locked cells cost less
    assert 0.0 < spec["refined_share"] < 1.0
    # the ring is part of the refined region and is blended towards the source, so it is measured on its own
    assert math.isfinite(spec["psnr_ring"]) and 5.0 < spec["psnr_ring"] < 80.0
    assert 0.0 <= spec["scene_accuracy"] <= 1.0
    assert "| blend ring dB |" in specedit.format_table(res)
