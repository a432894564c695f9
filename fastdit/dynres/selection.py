"""Which cells go to full resolution, and when (Fresco's variance-guided upsampling).

Scores are per cell [B, T, Hc, Wc], computed on the x0 estimates at coarse resolution (the carrier
block-averaged, [B, C, T, 2Hc, 2Wc]: each cell is 2x2 coarse pixels x C channels). The sampler
keeps the cells with the *lowest* rank first:
  variance  Fresco: a converged cell has a stable estimate. Var over the last W estimates
            (the paper's "variance across timesteps", taken on x0 rather than on z_t, whose
            variance is dominated by the deterministic noise decay), averaged over the cell; or
            "channel": Var over the cell's values of the last change of the estimate.
  edge      RALU-style: strongest gradients of the estimate first (ablation).
  random    a seeded draw per sample (ablation; seeded from the sample's own noise).
After the budget is met, coarse cells whose 4 neighbours are all up are filled in (no isolated
coarse holes, as SpotEdit prunes isolated points). Each sample's cells depend on that sample
alone: samples may end with different counts (the token set runs them as separate groups).
"""
import torch
import torch.nn.functional as F


def _per_cell(values):
    """[B, K, T, 2Hc, 2Wc] -> mean over K and each cell's 2x2 coarse pixels: [B, T, Hc, Wc]."""
    b, k, t, h2, w2 = values.shape
    return values.reshape(b, k, t, h2 // 2, 2, w2 // 2, 2).mean(dim=(1, 4, 6))


def variance_score(history, statistic="temporal"):
    """Convergence score from the last estimates (oldest first), lowest = most converged."""
    if len(history) < 2:
        raise ValueError("variance selection needs at least two x0 estimates")
    if statistic == "temporal":
        stack = torch.stack([h.float() for h in history], 0)
        return _per_cell(stack.var(dim=0, unbiased=False))
    change = (history[-1] - history[-2]).float()
    b, c, t, h2, w2 = change.shape
    cells = change.reshape(b, c, t, h2 // 2, 2, w2 // 2, 2).permute(0, 2, 3, 5, 1, 4, 6).flatten(-3)
    return cells.var(dim=-1, unbiased=False)


def edge_score(x0_coarse):
    """Sobel gradient magnitude of the estimate, averaged over channels and cell; negated so that
    the strongest edges rank first."""
    b, c, t, h, w = x0_coarse.shape
    planes = x0_coarse.float().permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)
    kx = torch.tensor([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]], device=planes.device).view(1, 1, 3, 3)
    padded = F.pad(planes, (1, 1, 1, 1), mode="replicate")
    g = (F.conv2d(padded, kx) ** 2 + F.conv2d(padded, kx.transpose(-1, -2)) ** 2).sqrt()
    g = g.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)
    return -_per_cell(g)


def random_score(cell_shape: tuple, seeds: list, device) -> torch.Tensor:
    """Uniform scores [B, *cell_shape], sample b's drawn from its own generator seed `seeds[b]`."""
    draws = [torch.rand(cell_shape, generator=torch.Generator().manual_seed(int(s) % 2 ** 63)) for s in seeds]
    return torch.stack(draws).to(device)


def _take_lowest(up, score, count):
    """Set the `count[b]` lowest-scored coarse cells of each sample up."""
    flat_up = up.flatten(1).clone()
    ranked = score.flatten(1).masked_fill(flat_up, float("inf")).argsort(dim=1)
    for b in range(up.shape[0]):
        n = int(count[b])
        if n > 0:
            flat_up[b, ranked[b, :n]] = True
    return flat_up.view_as(up)


def fill_isolated(up):
    """Coarse cells whose existing 4 neighbours (at least one) are all up become up (per frame)."""
    b, t, h, w = up.shape
    kernel = torch.tensor([[0., 1., 0.], [1., 0., 1.], [0., 1., 0.]], device=up.device).view(1, 1, 3, 3)
    planes = up.reshape(b * t, 1, h, w).float()
    neighbours_up = F.conv2d(F.pad(planes, (1, 1, 1, 1)), kernel).view(b, t, h, w)
    neighbours = F.conv2d(F.pad(torch.ones_like(planes), (1, 1, 1, 1)), kernel).view(b, t, h, w)
    return up | ((neighbours_up == neighbours) & (neighbours > 0))


def select(up, score, target):
    """New cell masks: at least `target` cells up per sample (lowest score first), then isolated
    coarse cells filled; per sample, independent of the batch."""
    current = up.flatten(1).sum(1)
    up = _take_lowest(up, score, (target - current).clamp(min=0))
    return fill_isolated(up)
