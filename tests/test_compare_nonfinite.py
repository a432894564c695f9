"""Non-finite pixels (NaN, +inf, -inf) never turn into a plausible PSNR / SSIM.

Inside the compared region they make that image's PSNR and SSIM NaN, with the count and the reason
in the report; the batch figures are then NaN too. Outside a mask they do not change PSNR (a
per-pixel measure); they make SSIM NaN only where its 11x11 window reaches into the mask, and
otherwise are reported as ignored."""
import json
import math

import pytest
import torch

from fastdit import metrics


def _pair(h=24, w=24, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(b, h, w, 3, generator=g)
    return ref, ref.clone()


def _run(pack_nodes, reference, candidate, mask=None):
    res = pack_nodes["FastDiTCompare"].execute(reference=reference, candidate=candidate, mask=mask)
    report, psnr, ssim, heat = res.args
    return report, psnr, ssim, heat, res.ui["fastdit_metrics"][0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_candidate_pixel_gives_nan_not_inf(bad):
    ref, cand = _pair()
    cand[0, 3, 4, 1] = bad
    assert math.isnan(metrics.psnr(ref, cand).item())
    assert math.isnan(metrics.ssim(ref, cand).item())


def test_non_finite_reference_pixel_gives_nan():
    ref, cand = _pair()
    ref[0, 0, 0, 0] = -math.inf
    assert math.isnan(metrics.psnr(ref, cand).item()) and math.isnan(metrics.ssim(ref, cand).item())


def test_the_same_inf_in_both_images_is_not_identical():
    ref, cand = _pair()
    ref[0, 5, 5] = math.inf
    cand[0, 5, 5] = math.inf
    assert math.isnan(metrics.psnr(ref, cand).item())


def test_node_reports_count_and_reason(pack_nodes):
    ref, cand = _pair()
    cand[0, 1, 1] = math.nan          # one pixel, all three channels
    cand[0, 7, 2, 0] = math.inf       # another pixel, one channel
    report, psnr, ssim, heat, ui = _run(pack_nodes, ref, cand)
    assert math.isnan(psnr) and math.isnan(ssim)
    assert "inf" not in report.replace("NaN or inf", "")
    assert "PSNR nan dB, SSIM nan" in report
    assert "the candidate has 2 non-finite pixels (NaN or inf) in the compared region" in report
    assert ui["psnr"] == "nan" and ui["ssim"] is None and ui["ssim_per_image"] == [None]
    assert ui["nonfinite_per_image"] == [{"reference": 0, "candidate": 2, "near_mask": 0, "outside_mask": 0}]
    json.dumps(ui, allow_nan=False)   # the UI message stays valid JSON


def test_batch_figures_are_nan_and_name_the_image(pack_nodes):
    ref, cand = _pair(b=3)
    cand[0] = (cand[0] + 0.05).clamp(0, 1)
    cand[1, 2, 2, 2] = math.nan
    report, psnr, ssim, _, ui = _run(pack_nodes, ref, cand)
    assert math.isnan(psnr) and math.isnan(ssim)
    lines = report.splitlines()
    assert lines[0].startswith("PSNR nan dB, SSIM nan over 3 images") and "#1" in lines[0]
    assert lines[1].startswith("  #0: PSNR ") and float(lines[1].split()[2]) > 20
    assert lines[2].startswith("  #1: PSNR nan dB, SSIM nan") and "candidate has 1 non-finite pixel " in lines[2]
    assert lines[3] == "  #2: PSNR inf dB, SSIM 1.0000"
    assert ui["psnr_per_image"][1:] == ["nan", "inf"] and ui["ssim_per_image"][1] is None


def test_pooled_psnr_of_a_nan_row_is_nan():
    assert math.isnan(metrics.pooled_psnr(torch.tensor([math.inf, math.nan])))
    assert math.isinf(metrics.pooled_psnr(torch.tensor([math.inf, math.inf])))


def _left_mask(h=24, w=24, cols=8):
    m = torch.zeros(1, h, w)
    m[:, :, :cols] = 1
    return m


def test_nan_far_outside_the_mask_is_ignored_and_reported(pack_nodes):
    ref, cand = _pair()
    cand[0, 10, 20] = math.nan        # column 20: more than 5 px from the mask (columns 0-7)
    assert math.isinf(metrics.psnr(ref, cand, _left_mask()).item())
    assert metrics.ssim(ref, cand, _left_mask()).item() == pytest.approx(1.0)
    report, psnr, ssim, _, ui = _run(pack_nodes, ref, cand, _left_mask())
    assert psnr == math.inf and ssim == pytest.approx(1.0)
    assert "PSNR inf dB, SSIM 1.0000 (masked)" in report
    assert "1 non-finite pixel outside the mask ignored" in report
    assert ui["nonfinite_per_image"][0]["outside_mask"] == 1


def test_nan_within_ssim_window_of_the_mask_makes_only_ssim_nan(pack_nodes):
    ref, cand = _pair()
    cand[0, 10, 12] = math.nan        # column 12: 5 px right of the mask's last column (7)
    assert math.isinf(metrics.psnr(ref, cand, _left_mask()).item())
    assert math.isnan(metrics.ssim(ref, cand, _left_mask()).item())
    report, psnr, ssim, _, ui = _run(pack_nodes, ref, cand, _left_mask())
    assert psnr == math.inf and math.isnan(ssim)
    assert "SSIM nan" in report and "1 non-finite pixel outside the mask lies within SSIM's 11x11 window" in report
    assert ui["nonfinite_per_image"][0] == {"reference": 0, "candidate": 0, "near_mask": 1, "outside_mask": 0}
    cand[0, 10, 12] = ref[0, 10, 12]
    cand[0, 10, 13] = math.nan        # one column further: out of reach
    assert metrics.ssim(ref, cand, _left_mask()).item() == pytest.approx(1.0)


def test_nan_inside_the_mask_makes_both_nan():
    ref, cand = _pair()
    cand[0, 3, 3] = math.nan
    assert math.isnan(metrics.psnr(ref, cand, _left_mask()).item())
    assert math.isnan(metrics.ssim(ref, cand, _left_mask()).item())
    counts = metrics.count_nonfinite(ref, cand, _left_mask())
    assert counts.candidate.tolist() == [1] and counts.reference.tolist() == [0]


def test_ssim_map_is_nan_exactly_within_the_window():
    ref, cand = _pair(h=30, w=30)
    cand[0, 12, 14] = math.inf
    s = metrics.ssim_map(ref, cand)[0]
    reach = torch.zeros(30, 30, dtype=torch.bool)
    reach[7:18, 9:20] = True
    assert torch.equal(torch.isnan(s), reach)
    assert torch.allclose(s[~reach], torch.ones(()).double())


def test_heatmap_marks_non_finite_pixels_and_keeps_the_scale():
    ref, cand = _pair(8, 8)
    cand[0, 1, 1] = math.nan
    cand[0, 4, 4] = (ref[0, 4, 4] + 0.5) % 1
    heat = metrics.difference_heatmap(ref, cand)
    assert torch.isfinite(heat).all()
    assert heat[0, 1, 1].tolist() == [0.0, 0.0, 1.0]              # blue: not on the black-red-white ramp
    assert heat[0, 4, 4].min() > 0.999                            # the largest finite difference is white
    assert heat[0, 0, 0].tolist() == [0.0, 0.0, 0.0]
