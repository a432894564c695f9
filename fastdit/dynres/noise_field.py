"""The unified noise field (Fresco's token-level noise, one value per latent coordinate).

One full-resolution Gaussian field E per seed: the sampler's own noise, so a seed gives the same
image structure as a plain sampler. Every scale reads the same field: the coarse noise of a cell
is the Haar DC of E over each f x f block (unit variance), and the children created by an
upsampling take E's detail coefficients, so the children's noise reproduces E exactly.
`fresh(k)` is independent noise for the "independent re-noise" ablation: a new draw per
resolution change k. Every random draw of a run (fresh noise, random selection) is seeded per
sample from the run's seed and a digest of that sample's own noise, so a sample draws the same
alone as in any batch, and samples with different noise draw differently.
"""
import hashlib
from typing import Sequence, Union

import torch

from .haar import block_mean, haar_dc, haar_detail


def noise_digest(row: torch.Tensor) -> bytes:
    """SHA-256 of one sample's noise (its float32 values)."""
    return hashlib.sha256(row.detach().float().cpu().contiguous().numpy().tobytes()).digest()


def mix_seed(salt: int, digest: bytes) -> int:
    """A generator seed from an integer salt and a sample's noise digest."""
    key = (int(salt) % 2 ** 64).to_bytes(8, "little") + digest
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") % 2 ** 63


class NoiseField:
    def __init__(self, field, seed):
        self.field = field            # [B, C, T, H, W], the sampler's noise
        self.seed = int(seed or 0)
        self._digests = None

    @property
    def digests(self) -> list:
        """Per sample: the digest of its noise (computed once, on first use)."""
        if self._digests is None:
            self._digests = [noise_digest(row) for row in self.field]
        return self._digests

    def sample_seeds(self, salt: Union[int, Sequence[int]]) -> list:
        """One generator seed per sample from `salt` (one, or one per sample) and its noise."""
        salts = [salt] * len(self.digests) if isinstance(salt, int) else list(salt)
        return [mix_seed(s, d) for s, d in zip(salts, self.digests)]

    def fresh(self, changes: Union[int, Sequence[int]]) -> torch.Tensor:
        """Independent noise of the field's shape for each sample's resolution change `changes`
        (one count, or one per sample)."""
        counts = [changes] * self.field.shape[0] if isinstance(changes, int) else list(changes)
        seeds = self.sample_seeds([self.seed * 1000003 + 7919 * (k + 1) for k in counts])
        rows = [torch.randn(self.field.shape[1:], generator=torch.Generator().manual_seed(s), dtype=torch.float32)
                for s in seeds]
        return torch.stack(rows).to(device=self.field.device, dtype=self.field.dtype)


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


__all__ = ["NoiseField", "coarse_noise", "coarse_start", "detail_noise", "mix_seed", "noise_digest",
           "spread_coarse_noise"]
