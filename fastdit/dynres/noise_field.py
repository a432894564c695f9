"""The unified noise field (Fresco's token-level noise, one value per latent coordinate).

One full-resolution Gaussian field E per seed: the sampler's own noise, so a seed gives the same
image structure as a plain sampler. Every scale reads the same field: the coarse noise of a cell
is the Haar DC of E over each f x f block (unit variance), and the children created by an
upsampling take E's detail coefficients, so the children's noise reproduces E exactly.
`fresh(k)` is independent noise for the "independent re-noise" ablation: a new draw per
resolution change k, seeded from the run's seed.
"""
import torch

from .haar import block_mean, haar_dc, haar_detail


class NoiseField:
    def __init__(self, field, seed):
        self.field = field            # [B, C, T, H, W], the sampler's noise
        self.seed = int(seed or 0)

    def fresh(self, k):
        gen = torch.Generator().manual_seed((self.seed * 1000003 + 7919 * (k + 1)) % (2 ** 63))
        noise = torch.randn(self.field.shape, generator=gen, dtype=torch.float32)
        return noise.to(device=self.field.device, dtype=self.field.dtype)


def coarse_noise(noise, grid):
    """Unit-variance coarse noise [B, C, T, 2Hc, 2Wc]: Haar DC of the field over f x f blocks."""
    ch, cw = grid.covered
    return haar_dc(noise[..., :ch, :cw], grid.factor)


def coarse_start(x, noise, sigma, grid):
    """The coarse RF state at `sigma` of the cells of x = sigma*E + (1-sigma)*L: block means of the
    signal plus unit-variance field noise, (1-sigma)*mean(L) + sigma*DC(E)."""
    ch, cw = grid.covered
    region = noise[..., :ch, :cw]
    return grid.coarse(x) + sigma * (haar_dc(region, grid.factor) - block_mean(region, grid.factor))


def detail_noise(noise, grid):
    """The part of the field each child adds beyond its block's DC (zero on the edge strip)."""
    ch, cw = grid.covered
    out = torch.zeros_like(noise)
    out[..., :ch, :cw] = haar_detail(noise[..., :ch, :cw], grid.factor)
    return out


def spread_coarse_noise(noise, grid):
    """Coarse field noise nearest-upsampled to full resolution (edge strip zero)."""
    return grid.spread(coarse_noise(noise, grid))


__all__ = ["NoiseField", "coarse_noise", "coarse_start", "detail_noise", "spread_coarse_noise"]
