"""Semantic locking: locked cells follow the re-noised source, and the source is pasted back.

All tensors are 5-D carriers [B, C, T, H, W] in the model's latent space (dynres.layout): a locked
cell holds its coarse value nearest-upsampled. At noise level t a locked cell is the straight
rectified-flow path to the source, (1 - t) mean(source) + t DC(E) with E the run's noise field
(the coarse noise the draft started from), so it never drifts; the model's velocity there is
discarded. At the end locked pixels take the full-resolution source, and refined cells with a
locked neighbour (the boundary ring, never edited cells when the edit is dilated by >= 1 cell)
take blend * source + (1 - blend) * edit (with ring = "unchanged", only the ring cells the edit
left within the selection threshold of the source: a ring cell the edit changed is part of it).
"""
import torch

from ..dynres.layout import CellGrid
from ..dynres.noise_field import coarse_noise
from .discrepancy import boundary_ring


def locked_state(grid: CellGrid, source: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """The carrier of every cell locked at noise level `sigma`."""
    return grid.spread((1 - sigma) * grid.coarse(source) + sigma * coarse_noise(noise, grid))


def lock(grid: CellGrid, x: torch.Tensor, unlocked: torch.Tensor, source: torch.Tensor, noise: torch.Tensor,
         sigma: float) -> torch.Tensor:
    """x with every locked cell reset to the re-noised source."""
    return torch.where(grid.fine_pixels(unlocked), x, locked_state(grid, source, noise, sigma).to(x))


def ring_pixels(grid: CellGrid, unlocked: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 1, T, H, W] bool: latent pixels of the boundary ring (less the cells `keep`)."""
    ring = boundary_ring(unlocked)
    if keep is not None:
        ring &= ~keep
    ch, cw = grid.covered
    px = torch.zeros((unlocked.shape[0], 1, grid.frames, grid.height, grid.width), dtype=torch.bool,
                     device=unlocked.device)
    px[..., :ch, :cw] = grid.fine_pixels(ring)[..., :ch, :cw]
    return px


def compose(grid: CellGrid, x: torch.Tensor, unlocked: torch.Tensor, source: torch.Tensor, blend: float,
            keep: torch.Tensor | None = None) -> torch.Tensor:
    """The final latent: the edit where unlocked (the edge strip too), the source elsewhere, the
    ring blended towards the source except in the cells `keep` [B, T, Hc, Wc] (ring cells the edit
    changed, with VerifyOptions.ring = "unchanged")."""
    src = source.to(x)
    out = torch.where(grid.fine_pixels(unlocked), x, src)
    if blend > 0:
        out = torch.where(ring_pixels(grid, unlocked, keep), blend * src + (1 - blend) * out, out)
    return out


def changed_cells(grid: CellGrid, x: torch.Tensor, source: torch.Tensor, threshold: float) -> torch.Tensor:
    """Cells [B, T, Hc, Wc] with a latent pixel where the edit x differs from the source by at least
    `threshold` (model space; a quarter of the channel mean of the squared difference, the latent
    measure's scale, per pixel: an object edge that crosses into the cell counts)."""
    ch, cw = grid.covered
    d = (x.float() - source.float())[..., :ch, :cw].pow(2).mean(1) / 4         # [B, T, H, W]
    b, t = d.shape[:2]
    p = grid.cell_pixels
    return d.reshape(b, t, grid.cell_rows, p, grid.cell_cols, p).amax((3, 5)) >= threshold
