"""The token set of a model call: which tokens each sample computes, and where they sit.

Per sample, a cell mask `up` [T, Hc, Wc] (grid.py) selects the fine tokens of up cells (and of
the edge strip) and one coarse token for every other cell. `TokenSet` holds the masks of a batch
and derives what a mixed-resolution forward needs from them: token rows for kernels.tokens, RoPE
ids, the per-call token counts for the cost line, the groups of a ragged batch, and `key`.

Ragged batches. Samples may compute different numbers of tokens. `groups()` puts samples of equal
count together; the forward runs one model call per group (cond and uncond rows of a sample share
its set), so every sample computes exactly its own set whatever its batch-mates do. A batch whose
samples all have one count is a single group: the set itself.

Key. `key` is a digest of the grid, the position units and every sample's mask, in batch order:
equal masks give equal keys, any change of any sample's set (even at the same token count) gives
another. Every set in which all tokens are fine has one key per latent size. Caches that keep
features per token set key and evict by it.
"""
import hashlib
from dataclasses import dataclass
from typing import Optional

import torch

from .grid import CellGrid, position_scale, row_coordinates

FINE = "fine"   # sample key of a sample whose tokens are all fine


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
        h.update(b"|")
    return h.hexdigest()


def sample_keys(grid: CellGrid, up: Optional[torch.Tensor], positions: str) -> tuple:
    """Per sample: FINE when every token is fine, else a digest of its cell mask."""
    if up is None:
        return ()
    flat = up.flatten(1).cpu()
    full = flat.all(1).tolist()
    packed = flat.to(torch.uint8).numpy()
    return tuple(FINE if full[b] else _digest(grid, positions, packed[b].tobytes()) for b in range(flat.shape[0]))


def token_set_key(grid: CellGrid, up: Optional[torch.Tensor], positions: str) -> str:
    """The key of the token set `up` (None: all fine) on `grid` with RoPE units `positions`."""
    keys = sample_keys(grid, up, positions)
    if all(k == FINE for k in keys):
        return _digest(FINE, grid.frames, grid.height, grid.width)
    return _digest(grid, positions, *keys)


@dataclass(frozen=True)
class CallCount:
    """Tokens of one model call: text, image (incl. references), image at full resolution, rows."""
    text: int
    image: int
    image_full: int
    batch: int

    def __iter__(self):   # (text, image, image_full, batch), as cost.run_costs reads it
        return iter((self.text, self.image, self.image_full, self.batch))


class TokenSet:
    """The token set of one sampling step, read by the DIFFUSION_MODEL wrapper (forward.py).

    `up` [B, T, Hc, Wc] bool (None: every token fine). `all_fine` means the model runs its own
    forward; `key` identifies the set (module docstring); `calls` lists the token counts of every
    model call made with it (CallCount)."""

    def __init__(self, adapter, grid: CellGrid, up: Optional[torch.Tensor], positions: str = "coarse",
                 stage: int = 3):
        self.adapter = adapter
        self.grid = grid
        self.up = up
        self.positions = positions
        self.stage = stage
        self.all_fine = up is None or bool(up.all())
        self.sample_keys = sample_keys(grid, up, positions)
        self.key = token_set_key(grid, up, positions)
        self.calls = []
        self._rows = None
        self._ref_rows = {}
        self._ids = {}
        self._groups = None

    def __repr__(self):
        return f"TokenSet(key={self.key}, tokens={self.token_counts}, stage={self.stage})"

    # -- per sample ---------------------------------------------------------------------------
    @property
    def token_counts(self) -> tuple:
        """Target image tokens of each sample ((full,) when `up` is None)."""
        if self.up is None:
            return (self.grid.full_tokens,)
        return tuple(self.grid.tokens(n) for n in self.up.flatten(1).sum(1).tolist())

    @property
    def image_tokens(self) -> int:
        """Target image tokens per sample (the largest, in a ragged set)."""
        return self.grid.full_tokens if self.all_fine else max(self.token_counts)

    @property
    def ragged(self) -> bool:
        return len(set(self.token_counts)) > 1

    def groups(self) -> list:
        """[(samples, TokenSet)]: samples of equal token count in order of their first sample, each
        with its set; a set of one count is the single group (range(B), self)."""
        if self._groups is None:
            counts = self.token_counts
            by_count = {}
            for b, n in enumerate(counts):
                by_count.setdefault(n, []).append(b)
            if len(by_count) == 1:
                self._groups = [(tuple(range(len(counts))), self)]
            else:
                self._groups = [(tuple(s), TokenSet(self.adapter, self.grid, self.up[list(s)], self.positions,
                                                    self.stage)) for s in by_count.values()]
        return self._groups

    # -- rows and positions ---------------------------------------------------------------------
    @property
    def rows(self) -> torch.Tensor:
        """int32 rows [B, N, 4] (t, y0, x0, s) of the target tokens (one token count: see groups())."""
        if self._rows is None:
            up = self.up if self.up is not None else torch.ones((1, *self.grid.cell_shape), dtype=torch.bool)
            self._rows = self.grid.rows(up)
        return self._rows

    def reference_rows(self, shape) -> torch.Tensor:
        """Rows of a reference latent: it follows the target's cells when it has the target's
        size, otherwise its whole cells are coarse (fine once every target cell is)."""
        key = tuple(shape[-2:])
        if key not in self._ref_rows:
            if key == (self.grid.height, self.grid.width):
                self._ref_rows[key] = self.rows
            else:
                g = CellGrid.of(shape, self.grid.factor)
                device = self.up.device if self.up is not None else None
                self._ref_rows[key] = g.rows(g.all_coarse(device) | self.all_fine)
        return self._ref_rows[key]

    def target_ids(self) -> torch.Tensor:
        """RoPE ids [B, N, 3] of the target's token rows (computed once per set)."""
        if "target" not in self._ids:
            self._ids["target"] = self._compute_ids(self.rows, self.grid.fine_grid, 0, 0, 0)
        return self._ids["target"]

    def reference_ids(self, shape, placement) -> torch.Tensor:
        """RoPE ids of a reference latent of `shape` placed at (frame index, row / col token offset)."""
        key = (tuple(shape), tuple(placement))
        if key not in self._ids:
            self._ids[key] = self._compute_ids(self.reference_rows(shape), CellGrid.of(shape, 1).fine_grid, *placement)
        return self._ids[key]

    def _compute_ids(self, rows, grid, frame, row_offset, col_offset):
        t, r, c, scale = row_coordinates(rows, self.grid.factor, self.positions)
        ids = self.adapter.positions((t + frame).flatten(), (r + row_offset).flatten(), (c + col_offset).flatten(), grid)
        ids = ids.view(*rows.shape[:2], -1).to(rows.device)
        ids[..., 1:] *= scale
        return ids

    @property
    def scale(self) -> float:
        return position_scale(self.grid.factor, self.positions)

    # -- bookkeeping --------------------------------------------------------------------------
    def record_call(self, call: dict) -> None:
        """Note the token counts of one model call (`call`: its arguments by name), one CallCount
        per group; image tokens include reference latents."""
        context = call.get("context")
        n_text = 0 if context is None else context.shape[1]
        refs = call.get("ref_latents") or []
        full = self.grid.full_tokens + sum(CellGrid.of(r.shape, 1).full_tokens for r in refs)
        batch = call["x"].shape[0]
        if self.all_fine:
            self.calls.append(CallCount(n_text, full, full, batch))
            return
        samples = len(self.token_counts)
        for members, group in self.groups():
            image = group.token_counts[0] + sum(group.reference_rows(r.shape).shape[1] for r in refs)
            self.calls.append(CallCount(n_text, image, full, batch // samples * len(members)))
