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


def _reflect(i, n):
    """Index of position i in a reflect-padded axis of length n (no edge repeat, as F.pad 'reflect')."""
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def _ssim_by_definition(a, b):
    """SSIM map [H, W] of one image pair, pixel by pixel: Gaussian-weighted (11, sigma 1.5) means,
    variances and covariance over the reflect-padded window, mean over channels."""
    x, y = a.double(), b.double()
    h, w, _ = x.shape
    k = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-k ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[..., None]
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = torch.empty(h, w, dtype=torch.float64)
    for i in range(h):
        rows = [_reflect(i + d, h) for d in range(-5, 6)]
        for j in range(w):
            cols = [_reflect(j + d, w) for d in range(-5, 6)]
            px, py = x[rows][:, cols], y[rows][:, cols]            # [11, 11, C]
            mx, my = (win * px).sum((0, 1)), (win * py).sum((0, 1))
            vx = (win * px * px).sum((0, 1)) - mx * mx
            vy = (win * py * py).sum((0, 1)) - my * my
            cxy = (win * px * py).sum((0, 1)) - mx * my
            s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
            out[i, j] = s.mean()
    return out


def _ssim_map_conv2d(a, b):
    """SSIM map [B, H, W] with one full 11x11 2-D convolution per statistic."""
    import torch.nn.functional as F
    x, y = a.double().permute(0, 3, 1, 2), b.double().permute(0, 3, 1, 2)
    ch = x.shape[1]
    k = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-k ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(ch, 1, 11, 11).contiguous()

    def blur(t):
        return F.conv2d(F.pad(t, (5,) * 4, mode="reflect"), win, groups=ch)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean(1)


def test_ssim_map_matches_the_definition_pixel_by_pixel():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(1, 9, 13, 3, generator=g)
    b = (a + 0.2 * torch.randn(1, 9, 13, 3, generator=g)).clamp(0, 1)
    expected = _ssim_by_definition(a[0], b[0])
    assert torch.allclose(metrics.ssim_map(a, b)[0], expected, rtol=0, atol=1e-12)
    assert torch.allclose(_ssim_map_conv2d(a, b)[0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 6, 6, 3), (2, 37, 50, 3), (1, 70, 33, 3), (3, 131, 97, 1), (1, 200, 300, 3)])
def test_ssim_matches_the_2d_convolution_reference(shape):
    g = torch.Generator().manual_seed(sum(shape))
    a = torch.rand(shape, generator=g)
    b = (a + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    reference = _ssim_map_conv2d(a, b)
    assert (metrics.ssim_map(a, b) - reference).abs().max().item() < 1e-12
    mask = torch.rand(shape[0], shape[1], shape[2], generator=g).round()
    expected = (reference * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)
    assert torch.allclose(metrics.ssim(a, b, mask), expected, rtol=0, atol=1e-12)
    assert torch.allclose(metrics.ssim(a, b), reference.flatten(1).mean(1), rtol=0, atol=1e-12)


def test_ssim_refuses_images_smaller_than_its_window_reach():
    with pytest.raises(ValueError, match="too small for SSIM"):
        metrics.ssim(torch.zeros(1, 5, 40, 3), torch.zeros(1, 5, 40, 3))
