"""Token discrepancy between the draft and the source, and which cells are refined.

Scores are per cell [B, T, Hc, Wc] (a cell = f x f tokens = 2f x 2f latent pixels, dynres.layout),
computed on the coarse grid: the draft's clean estimate and the source are both block means over
the cell's coarse pixels, so a cell scores only what the draft changed, not the detail the draft
cannot have. Two measures:
  latent  a quarter of the mean over channels of the squared difference of the latents in the
          model's space (where FLUX / Qwen latents have about unit variance; the quarter puts its
          scale near the pixel measure's on the demo model, so one threshold suits both).
  vae     the VAE decoder's view: for a convolutional decoder (FLUX / SD style: conv_in, mid block)
          the channel-normalised squared difference of its first two feature maps (SpotEdit's
          token LPIPS), 0..1; for any other VAE the mean squared difference of the decoded pixels
          (0..1 for images in 0..1).
"""
import torch
import torch.nn.functional as F

from ..dynres.layout import CellGrid, as5d
from ..dynres.selection import fill_isolated


def cell_mean(values: torch.Tensor, grid: CellGrid) -> torch.Tensor:
    """[B, T, H', W'] map over the covered latent region at any integer scale -> per-cell mean."""
    b, t, h, w = values.shape
    return values.reshape(b, t, grid.cell_rows, h // grid.cell_rows, grid.cell_cols, w // grid.cell_cols).mean((3, 5))


def latent_score(x0: torch.Tensor, source: torch.Tensor, grid: CellGrid) -> torch.Tensor:
    """The "latent" measure per cell: a quarter of the mean over channels of the squared difference,
    on latents in the model's own (about unit-variance) space."""
    a, s = grid.coarse(as5d(x0).float()), grid.coarse(as5d(source).float())
    return cell_mean((a - s).pow(2).mean(1) / 4, grid)


def _conv_decoder(vae):
    fsm = getattr(vae, "first_stage_model", None)
    dec = getattr(fsm, "decoder", None)
    if dec is not None and hasattr(dec, "conv_in") and hasattr(getattr(dec, "mid", None), "block_1"):
        return fsm, dec
    return None


def _decoder_features(vae, latent):
    """The first two feature maps of a convolutional VAE decoder ([N, C, h, w] each)."""
    fsm, dec = _conv_decoder(vae)
    param = next(dec.parameters())
    z = latent.to(param)
    post = getattr(fsm, "post_quant_conv", None)
    if post is not None:
        z = post(z)
    h = dec.conv_in(z)
    return [h, dec.mid.block_1(h, None)]


def _normalised(f):
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)


def vae_score(vae, x0: torch.Tensor, source: torch.Tensor, grid: CellGrid) -> tuple[torch.Tensor, str]:
    """The "vae" measure per cell, and which view of the VAE it used ("decoder features" / "pixels").
    x0 and source are latents as the VAE decodes them."""
    a = _blocky(x0, grid)
    s = _blocky(source, grid)
    b, t = as5d(x0).shape[0], as5d(x0).shape[2]
    if _conv_decoder(vae) is not None and as5d(x0).shape[2] == 1 and x0.ndim == 4:
        maps = []
        for fa, fs in zip(_decoder_features(vae, a), _decoder_features(vae, s)):
            d = (_normalised(fa.float()) - _normalised(fs.float())).pow(2).sum(1, keepdim=True) / 4
            maps.append(F.interpolate(d, size=grid.covered, mode="bilinear", align_corners=False))
        d = torch.stack(maps).mean(0).view(b, t, *grid.covered)
        return cell_mean(d, grid), "decoder features"
    pa, ps = _pixels(vae, a, b * t), _pixels(vae, s, b * t)
    d = (pa - ps).pow(2).mean(-1)[:, None]                            # [N, 1, h, w]
    d = F.interpolate(d, size=(grid.height, grid.width), mode="area")
    ch, cw = grid.covered
    return cell_mean(d.view(b, t, grid.height, grid.width)[..., :ch, :cw], grid), "pixels"


def _blocky(latent, grid):
    """The latent with every cell replaced by its coarse values (the draft's own resolution)."""
    x5 = as5d(latent)
    out = x5.clone()
    ch, cw = grid.covered
    out[..., :ch, :cw] = grid.spread(grid.coarse(x5))[..., :ch, :cw]
    return out.view(latent.shape)


def _pixels(vae, latent, n):
    img = vae.decode(latent).float()
    return img.reshape(-1, *img.shape[-3:])[:n]


def dilate(cells: torch.Tensor, radius: int) -> torch.Tensor:
    """Cells [B, T, Hc, Wc] grown by `radius` cells (8-neighbourhood, per frame)."""
    if radius <= 0:
        return cells
    b, t, h, w = cells.shape
    k = 2 * radius + 1
    grown = F.max_pool2d(cells.reshape(b * t, 1, h, w).float(), k, stride=1, padding=radius)
    return grown.view(b, t, h, w) > 0


def coverage(cell_shape, stride: int, device=None) -> torch.Tensor:
    """The sparse uniform coverage set: one cell per stride x stride block, at its centre."""
    t, h, w = cell_shape
    out = torch.zeros((1, t, h, w), dtype=torch.bool, device=device)
    if stride > 0:
        out[..., stride // 2::stride, stride // 2::stride] = True
    return out


def edited_cells(score: torch.Tensor, threshold: float, budget: float) -> torch.Tensor:
    """Cells the edit changed: score >= threshold, or (budget > 0) the budget share with the
    highest scores per sample (at least one cell)."""
    if budget <= 0:
        return score >= threshold
    flat = score.flatten(1)
    k = min(flat.shape[1], max(1, round(budget * flat.shape[1])))
    top = flat.topk(k, dim=1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True).view_as(score)


def boundary_ring(unlocked: torch.Tensor) -> torch.Tensor:
    """Unlocked cells with a locked 8-neighbour."""
    return unlocked & dilate(~unlocked, 1)


def unlock(score: torch.Tensor, options) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(edited cells E, unlocked cells A, global edit) from per-cell scores and VerifyOptions:
    A = dilate(E) | coverage, isolated locked cells filled, per sample (a batch runs ragged token sets,
    fastdit.tokens); a share of edited
    cells above options.global_share in any sample unlocks everything."""
    edited = edited_cells(score, options.threshold, options.budget)
    share = edited.flatten(1).float().mean(1)
    if bool((share > options.global_share).any()):
        return edited, torch.ones_like(edited), True
    up = dilate(edited, options.dilation) | coverage(score.shape[1:], options.coverage_stride, score.device)
    return edited, fill_isolated(up), False
