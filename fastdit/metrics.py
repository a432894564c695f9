"""Image fidelity metrics (PSNR, SSIM, difference heat map) on ComfyUI IMAGE tensors.

IMAGE tensors are [B, H, W, C] floats in [0, 1]; MASKs are [B, H, W] or [H, W] in [0, 1].
"""
import math

import torch
import torch.nn.functional as F

# SSIM constants of Wang et al. 2004 for a data range of 1.
_SSIM_C1 = 0.01 ** 2
_SSIM_C2 = 0.03 ** 2


def _gaussian_window(size=11, sigma=1.5, dtype=torch.float64, device=None):
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def broadcast_pair(a, b):
    """Check two IMAGE batches have the same size; a batch of 1 is compared against every image."""
    if a.ndim != 4 or b.ndim != 4:
        raise ValueError(f"expected IMAGE tensors [B,H,W,C], got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"images differ in size: {a.shape[2]}x{a.shape[1]}x{a.shape[3]} vs "
                         f"{b.shape[2]}x{b.shape[1]}x{b.shape[3]} (width x height x channels); "
                         "resize one of them (e.g. ImageScale) so both match")
    if a.shape[0] != b.shape[0]:
        if a.shape[0] == 1:
            a = a.expand(b.shape[0], -1, -1, -1)
        elif b.shape[0] == 1:
            b = b.expand(a.shape[0], -1, -1, -1)
        else:
            raise ValueError(f"batch sizes differ ({a.shape[0]} vs {b.shape[0]}); "
                             "use equal batches or a single image on one side")
    return a, b


def prepare_mask(mask, batch, height, width):
    """MASK -> [B, H, W] float64 weights at the image size, or None."""
    if mask is None:
        return None
    m = mask.to(torch.float64)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"expected MASK [B,H,W] or [H,W], got shape {tuple(mask.shape)}")
    if m.shape[-2:] != (height, width):
        m = F.interpolate(m[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    if m.shape[0] not in (1, batch):
        raise ValueError(f"mask batch {m.shape[0]} does not match image batch {batch}")
    m = m.expand(batch, -1, -1)
    if (m.flatten(1).sum(1) <= 0).any():
        raise ValueError("the mask selects no pixels for at least one image")
    return m


def psnr(a, b, mask=None):
    """Per-image PSNR in dB (data range 1); inf where the images are identical."""
    a, b = broadcast_pair(a, b)
    err = (a.double() - b.double()) ** 2  # [B,H,W,C]
    m = prepare_mask(mask, a.shape[0], a.shape[1], a.shape[2])
    if m is None:
        mse = err.flatten(1).mean(1)
    else:
        w = m[..., None].expand_as(err)
        mse = (err * w).flatten(1).sum(1) / w.flatten(1).sum(1)
    return torch.where(mse > 0, -10 * torch.log10(mse.clamp_min(1e-300)), torch.full_like(mse, math.inf))


def ssim_map(a, b):
    """SSIM map [B, H, W] (mean over channels), Gaussian window 11 / sigma 1.5, reflect padding."""
    a, b = broadcast_pair(a, b)
    x = a.double().permute(0, 3, 1, 2)
    y = b.double().permute(0, 3, 1, 2)
    ch = x.shape[1]
    win = _gaussian_window(device=x.device).expand(ch, 1, -1, -1).contiguous()
    pad = win.shape[-1] // 2
    if min(x.shape[-2:]) <= pad:
        raise ValueError(f"images of {x.shape[-1]}x{x.shape[-2]} are too small for SSIM (need > {pad} px)")

    def blur(t):
        return F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), win, groups=ch)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + _SSIM_C1) * (2 * sxy + _SSIM_C2)) / ((mx * mx + my * my + _SSIM_C1) * (sxx + syy + _SSIM_C2))
    return s.mean(1)


def ssim(a, b, mask=None):
    """Per-image SSIM; with a mask, the SSIM map is averaged over the masked pixels."""
    s = ssim_map(a, b)
    m = prepare_mask(mask, s.shape[0], s.shape[1], s.shape[2])
    if m is None:
        return s.flatten(1).mean(1)
    return (s * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def difference_heatmap(a, b, mask=None, gain=None):
    """IMAGE [B,H,W,3] visualising |a-b| (black = equal, through red and yellow to white).

    `gain` scales the absolute difference; by default the largest difference in the batch maps to
    white. Pixels outside the mask are dimmed."""
    a, b = broadcast_pair(a, b)
    d = (a.float() - b.float()).abs().mean(-1)  # [B,H,W]
    if gain is None:
        peak = float(d.max())
        gain = 1.0 / peak if peak > 0 else 1.0
    v = (d * gain).clamp(0, 1)
    heat = torch.stack([(3 * v).clamp(0, 1), (3 * v - 1).clamp(0, 1), (3 * v - 2).clamp(0, 1)], dim=-1)
    m = prepare_mask(mask, a.shape[0], a.shape[1], a.shape[2])
    if m is not None:
        heat = heat * (0.25 + 0.75 * m[..., None].float())
    return heat


def pooled_psnr(per_image_psnr):
    """PSNR of the batch's mean squared error (inf only when every image is identical)."""
    mse = (10 ** (-per_image_psnr.double() / 10)).mean()
    return math.inf if float(mse) == 0 else float(-10 * torch.log10(mse))
