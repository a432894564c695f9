"""Resolution changes of cells on the carrier.

Both variants keep one timestep for the whole token set. `noise` is the full-resolution noise the
new fine pixels take: the unified field E, or fresh noise for the ablation.

(A) same-t ("same_t"): at sigma = t each new child is an exact RF state at the same t,
      child = H4 . [2(1-t) x0_c + t eps_c, t eps_1, t eps_2, t eps_3]  = (1-t) x0_c + t E_child,
    from the coarse x0 estimate of the last forward (Euler keeps that estimate unchanged along
    the step). "interpolate" replaces the piecewise-constant coarse estimate by its bilinear
    upsampling. Cells that stay coarse or were fine are untouched.
(B) SNR-matched ("snr_matched"): t' = f t / (1 + (f-1) t), beta = 1 / (1 + (f-1) t);
      children = H4 . [f beta z_c, t' d_1, t' d_2, t' d_3] = beta z_c + t' detail(E),
    an exact state at t' built from the current coarse state itself. Every other token moves to
    t' along its own straight path, z' = b z + a n with b = (1-t')/(1-t): n is the field
    (unified: a = t' - b t, the same-path re-parameterisation) or fresh noise (a keeps variance).
    In a batch only the samples whose cells change take the jump (FrescoRun._jump): a sample
    whose layout stays keeps t, as it would alone.

img2img (`source` L: the latent being denoised, the schedule starting below sigma_max). The state
holds a (1 - t) share of signal, so an expansion must neither drop L's detail (the coarse cells hold
only its block means) nor rebuild the state from the x0 estimate, whose error would enter with
weight 1 - t. Children keep their block's own state and take L's detail at the signal's weight:
  (A) child = (1-t) L + t E + up(S - (1-t) mean(L)),  S = z_c - t DC(E)
      (S is the signal of the cell's coarse state z_c, E the field it was noised with; up = nearest for
      "hadamard", bilinear for "interpolate"), which for "hadamard" is the block's state
      converted to the fine noise scale plus (1-t) detail(L) + t detail(E);
  (B) children = beta z_c + t' detail(E) + (1-t') detail(L)  (same signal-change form).
Without a source both are exactly the expansions above.
"""
import torch
import torch.nn.functional as F

from .haar import haar_synthesis
from .noise_field import coarse_noise, detail_noise


def _bilinear(coarse, grid):
    """Coarse map [B, C, T, h, w] upsampled bilinearly by f to the covered region, then padded."""
    b, c, t, h, w = coarse.shape
    up = F.interpolate(coarse.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).float(), scale_factor=grid.factor,
                       mode="bilinear", align_corners=False)
    up = up.view(b, t, c, h * grid.factor, w * grid.factor).permute(0, 2, 1, 3, 4).to(coarse.dtype)
    pad_h, pad_w = grid.height - up.shape[-2], grid.width - up.shape[-1]
    return F.pad(up, (0, pad_w, 0, pad_h)) if (pad_h or pad_w) else up


def _children(grid, signal_dc, noise_dc, detail, expansion, source=None, weight=0.0):
    """Fine pixels of upsampled cells from Haar DC coefficients (coarse grid: signal part and noise
    part) and the detail part (full resolution). "hadamard": the Haar/Hadamard synthesis of
    DC = signal + noise with the details; "interpolate": the signal upsampled bilinearly, the
    noise DC spread over its block as in the synthesis.

    With a `source` the signal is `weight` times the source plus the change of the signal from
    the source's own DC, upsampled (nearest for "hadamard", bilinear for "interpolate")."""
    f = grid.factor
    if source is not None:
        change = (signal_dc - f * weight * grid.coarse(source)) / f
        up = _bilinear(change, grid) if expansion == "interpolate" else grid.spread(change)
        return weight * source + up + grid.spread(noise_dc / f) + detail
    if expansion == "interpolate":
        return _bilinear(signal_dc / f, grid) + grid.spread(noise_dc / f) + detail
    ch, cw = grid.covered
    out = detail.clone()
    out[..., :ch, :cw] = haar_synthesis(signal_dc + noise_dc, detail[..., :ch, :cw], f)
    return out


def same_t(grid, x, new_pixels, sigma, x0, noise, expansion, source=None, field=None):
    """(A): returns the carrier with the new cells expanded at the same sigma. img2img: `source`
    and the `field` the carrier was noised with (the signal is read off the carrier)."""
    f = grid.factor
    if source is None:
        signal = f * (1 - sigma) * grid.coarse(x0)
    else:
        signal = f * (grid.coarse(x) - sigma * coarse_noise(field, grid))
    child = _children(grid, signal, sigma * coarse_noise(noise, grid), sigma * detail_noise(noise, grid), expansion,
                      source, 1 - sigma)
    return torch.where(new_pixels, child, x), sigma


def snr_matched(grid, x, new_pixels, fine_before, sigma, noise, expansion, renoise, source=None):
    """(B): returns (carrier, t') with the new cells expanded and every other token moved to t'."""
    f = grid.factor
    beta = 1.0 / (1.0 + (f - 1) * sigma)
    sigma_next = f * sigma * beta
    coarse = grid.coarse(x)
    child = _children(grid, f * beta * coarse, torch.zeros_like(coarse), sigma_next * detail_noise(noise, grid),
                      expansion, source, 1 - sigma_next)
    if sigma < 1.0:
        b = (1.0 - sigma_next) / (1.0 - sigma)
        a = (sigma_next - b * sigma) if renoise == "unified" else (sigma_next ** 2 - (b * sigma) ** 2) ** 0.5
        path_noise = torch.where(fine_before, noise, grid.spread(coarse_noise(noise, grid)))
        x = b * x + a * path_noise
    return torch.where(new_pixels, child, x), sigma_next
