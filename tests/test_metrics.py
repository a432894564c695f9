"""PSNR / SSIM / heat map on inputs with analytic answers."""
import math

import pytest
import torch

from fastdit import metrics


def _gray(v=0.5, b=1, h=32, w=32):
    return torch.full((b, h, w, 3), v)


def _checker(h=32, w=32):
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((x + y) % 2 * 2 - 1).float()[None, :, :, None].expand(1, h, w, 3)


def test_identical_images_give_inf_and_one():
    img = torch.rand(2, 24, 24, 3)
    assert torch.isinf(metrics.psnr(img, img)).all()
    assert torch.allclose(metrics.ssim(img, img), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("d", [0.01, 0.05, 0.2])
def test_known_noise_gives_analytic_psnr(d):
    ref = _gray(0.5)
    noisy = ref + d * _checker()  # every pixel off by exactly d -> MSE = d^2
    assert metrics.psnr(ref, noisy).item() == pytest.approx(-10 * math.log10(d * d), abs=1e-4)  # float32 pixels


def test_constant_images_give_analytic_ssim():
    a, b = _gray(0.3), _gray(0.6)
    c1 = 0.01 ** 2
    expected = (2 * 0.3 * 0.6 + c1) / (0.3 ** 2 + 0.6 ** 2 + c1)  # variance terms cancel exactly
    assert metrics.ssim(a, b).item() == pytest.approx(expected, abs=1e-6)


def test_mask_restricts_the_comparison():
    ref = torch.rand(1, 16, 16, 3)
    cand = ref.clone()
    cand[:, :, 8:] = 1 - cand[:, :, 8:]      # right half differs
    left = torch.zeros(16, 16)
    left[:, :8] = 1
    assert math.isinf(metrics.psnr(ref, cand, left).item())
    assert metrics.psnr(ref, cand, 1 - left).item() < 20
    assert metrics.ssim(ref, cand, 1 - left).item() < metrics.ssim(ref, cand, left).item()


def test_batch_of_one_broadcasts_and_per_image_values():
    ref = _gray(0.5)
    cands = torch.stack([_gray(0.5)[0], (_gray(0.5) + 0.1 * _checker())[0]])
    p = metrics.psnr(ref, cands)
    assert math.isinf(p[0].item()) and p[1].item() == pytest.approx(20.0, abs=1e-4)
    assert metrics.pooled_psnr(p) == pytest.approx(-10 * math.log10(0.01 / 2), abs=1e-4)


def test_mismatched_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="differ in size"):
        metrics.psnr(torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 10, 3))
    with pytest.raises(ValueError, match="batch sizes differ"):
        metrics.ssim(torch.zeros(2, 16, 16, 3), torch.zeros(3, 16, 16, 3))
    with pytest.raises(ValueError, match="selects no pixels"):
        metrics.psnr(torch.zeros(1, 8, 8, 3), torch.ones(1, 8, 8, 3), torch.zeros(8, 8))


def test_heatmap_is_black_where_equal_and_bright_where_different():
    ref = torch.zeros(1, 8, 8, 3)
    cand = ref.clone()
    cand[0, 2, 3] = 1.0
    heat = metrics.difference_heatmap(ref, cand)
    assert heat.shape == (1, 8, 8, 3)
    assert heat[0, 2, 3].min() == 1.0 and heat[0, 0, 0].max() == 0.0
