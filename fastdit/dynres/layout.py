"""Cells, the carrier latent and the mixed token layout.

Geometry. Latents are handled as 5-D [B, C, T, H, W] (a 4-D image latent is T = 1). The DiT
patchifies 2x2 latent pixels into one token. At coarse factor f the coarse latent is the latent
block-averaged over f x f pixels, so one coarse token covers 2f x 2f latent pixels = f x f fine
tokens: that area is a *cell*, the unit that is either coarse or upsampled ("up"). Cells tile the
image from the top-left corner; a strip at the bottom / right edge too small for a whole cell
(odd or non-multiple sizes) is always fine, so every latent size works without padding.

Carrier. The sampler keeps one full-resolution latent. A fine pixel holds its own value; a coarse
cell holds its coarse latent values nearest-upsampled (each coarse pixel repeated over its f x f
block), so block-averaging recovers them exactly. The DiT therefore always receives a latent of
the user's size (memory estimate, previews and output shape stay those of the full image).

Layout. Per sample, an `up` mask [T, Hc, Wc] over the cells gives the token sequence: the fine
tokens of up cells and of the edge strip (raster order), then the coarse tokens of the remaining
cells (raster order), each described by a row (t, y0, x0, s) for kernels.tokens.
"""
import itertools
from dataclasses import dataclass

import torch

from .haar import block_mean, nearest_up

POSITION_MODES = ("coarse", "coarse_centred", "fine")
_keys = itertools.count(1)


def as5d(x):
    """[B, C, H, W] -> [B, C, 1, H, W] view; 5-D latents unchanged."""
    if x.ndim == 4:
        return x.unsqueeze(2)
    if x.ndim == 5:
        return x
    raise ValueError(f"expected a 4-D or 5-D latent, got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class CellGrid:
    frames: int
    height: int   # latent pixels
    width: int
    factor: int

    @classmethod
    def of(cls, latent_shape, factor):
        t, h, w = (1, *latent_shape[-2:]) if len(latent_shape) == 4 else tuple(latent_shape[-3:])
        return cls(t, h, w, factor)

    @property
    def fine_rows(self):
        return (self.height + 1) // 2

    @property
    def fine_cols(self):
        return (self.width + 1) // 2

    @property
    def fine_grid(self):
        """(frames, rows, cols) of the full-resolution token grid, as the DiT patchifies it."""
        return self.frames, self.fine_rows, self.fine_cols

    @property
    def cell_pixels(self):
        return 2 * self.factor

    @property
    def cell_rows(self):
        return self.height // self.cell_pixels

    @property
    def cell_cols(self):
        return self.width // self.cell_pixels

    @property
    def cells(self):
        """Cells per sample (all frames)."""
        return self.frames * self.cell_rows * self.cell_cols

    @property
    def cell_shape(self):
        return self.frames, self.cell_rows, self.cell_cols

    @property
    def covered(self):
        """(rows, cols) of latent pixels inside whole cells."""
        return self.cell_rows * self.cell_pixels, self.cell_cols * self.cell_pixels

    @property
    def full_tokens(self):
        """Image tokens of one sample at full resolution."""
        return self.frames * self.fine_rows * self.fine_cols

    def tokens(self, n_up):
        """Image tokens of one sample with n_up cells upsampled."""
        return self.full_tokens - (self.cells - n_up) * (self.factor ** 2 - 1)

    # -- masks -----------------------------------------------------------------------------
    def _spread(self, up, size, full, fill=True):
        """Cell mask [B, T, Hc, Wc] repeated `size` times per axis, padded to `full` with `fill`."""
        m = nearest_up(up, size)
        pad_h, pad_w = full[0] - m.shape[-2], full[1] - m.shape[-1]
        if pad_h or pad_w:
            m = torch.nn.functional.pad(m.to(torch.uint8), (0, pad_w, 0, pad_h), value=int(fill)).bool()
        return m

    def fine_pixels(self, up):
        """[B, 1, T, H, W] bool: the pixel belongs to an up cell or to the edge strip."""
        return self._spread(up, self.cell_pixels, (self.height, self.width)).unsqueeze(1)

    def fine_tokens(self, up):
        """[B, T, Hf, Wf] bool: the fine token is part of the sequence."""
        return self._spread(up, self.factor, (self.fine_rows, self.fine_cols))

    # -- carrier -----------------------------------------------------------------------------
    def coarse(self, x):
        """The coarse latent [B, C, T, 2Hc, 2Wc]: f x f block means over the whole cells."""
        ch, cw = self.covered
        return block_mean(x[..., :ch, :cw], self.factor)

    def spread(self, coarse):
        """Coarse latent nearest-upsampled back to [.., H, W] (edge strip zero)."""
        m = nearest_up(coarse, self.factor)
        pad_h, pad_w = self.height - m.shape[-2], self.width - m.shape[-1]
        return torch.nn.functional.pad(m, (0, pad_w, 0, pad_h)) if (pad_h or pad_w) else m

    def merge(self, fine, coarse_full, up):
        """Carrier: `fine` where pixels are fine, `coarse_full` (already spread) elsewhere."""
        return torch.where(self.fine_pixels(up), fine, coarse_full)

    # -- token rows -------------------------------------------------------------------------
    def rows(self, up):
        """int32 rows [B, N, 4] (t, y0, x0, s) of the mixed sequence for cell masks `up`."""
        b = up.shape[0]
        fine = self.fine_tokens(up).flatten(1)
        coarse = (~up).flatten(1)
        counts = fine.sum(1)
        if not bool((counts == counts[0]).all()):
            raise ValueError("every sample of a batch must have the same number of upsampled cells")
        fi = fine.nonzero()[:, 1].view(b, -1)
        ci = coarse.nonzero()[:, 1].view(b, -1)
        fr, fc = self.fine_rows, self.fine_cols
        hc, wc = self.cell_rows, self.cell_cols
        f = self.factor
        fine_part = torch.stack([fi // (fr * fc), 2 * (fi // fc % fr), 2 * (fi % fc), torch.ones_like(fi)], -1)
        coarse_part = torch.stack([ci // (hc * wc), 2 * f * (ci // wc % hc), 2 * f * (ci % wc),
                                   torch.full_like(ci, f)], -1)
        return torch.cat([fine_part, coarse_part], 1).to(torch.int32)

    def all_coarse(self, device=None):
        return torch.zeros((1, *self.cell_shape), dtype=torch.bool, device=device)


def position_scale(factor, mode):
    """RoPE units per fine token: 1/f in the coarse-unit modes, 1 in fine units."""
    return 1.0 if mode == "fine" else 1.0 / factor


def row_coordinates(rows, factor, mode):
    """(frame, row, col) of each token in fine-token units and the spatial scale that turns them
    into RoPE units:
      coarse          RALU's convention: coarse tokens at integer coarse positions, a fine child
                      at +a/f (scale 1/f); at the full-resolution stage the model's own grid.
      coarse_centred  as coarse, a coarse token at the centre of its children (i + (f-1)/2f).
      fine            fine-grid units: coarse tokens at the centre of their children (scale 1).
    """
    if mode not in POSITION_MODES:
        raise ValueError(f"positions must be one of {', '.join(POSITION_MODES)}, not {mode!r}")
    t, y0, x0, s = rows.float().unbind(-1)
    r, c = y0 / 2, x0 / 2
    if mode != "coarse":
        centre = (s - 1) / 2          # 0 for fine tokens, (f-1)/2 for coarse ones
        r, c = r + centre, c + centre
    return t, r, c, position_scale(factor, mode)


class MixedLayout:
    """The token set of one sampling step, read by the DIFFUSION_MODEL wrapper.

    `key` changes whenever the token set changes, so any cache keyed by it (or by token count)
    resets at each resolution change; `all_fine` means the model runs its normal forward."""

    def __init__(self, adapter, grid, up, positions="coarse", stage=3):
        self.adapter = adapter
        self.grid = grid
        self.up = up
        self.positions = positions
        self.stage = stage
        self.key = next(_keys)
        self.all_fine = up is None or bool(up.all())
        self._rows = None
        self._ref_rows = {}
        self._ids = {}
        self.calls = []   # per model call: (text, image, image at full resolution, batch) tokens

    @property
    def rows(self):
        if self._rows is None:
            self._rows = self.grid.rows(self.up)
        return self._rows

    @property
    def image_tokens(self):
        """Target image tokens per sample in this layout."""
        return self.grid.full_tokens if self.all_fine else self.rows.shape[1]

    def record_call(self, call):
        """Note the token counts of one model call: (text, image, image at full resolution, batch);
        image tokens include reference latents."""
        context = call.get("context")
        refs = call.get("ref_latents") or []
        full = self.grid.full_tokens + sum(CellGrid.of(r.shape, 1).full_tokens for r in refs)
        image = full if self.all_fine else self.rows.shape[1] + sum(self.reference_rows(r.shape).shape[1] for r in refs)
        self.calls.append((0 if context is None else context.shape[1], image, full, call["x"].shape[0]))

    def reference_rows(self, shape):
        """Rows of a reference latent: it follows the target's cells when it has the target's
        size, otherwise its whole cells are coarse (fine once every target cell is)."""
        key = tuple(shape[-2:])
        if key not in self._ref_rows:
            if key == (self.grid.height, self.grid.width):
                self._ref_rows[key] = self.rows
            else:
                g = CellGrid.of(shape, self.grid.factor)
                self._ref_rows[key] = g.rows(g.all_coarse(self.up.device) | bool(self.up.all()))
        return self._ref_rows[key]

    def target_ids(self):
        """RoPE ids [B, N, 3] of the target's token rows (computed once per layout)."""
        if "target" not in self._ids:
            self._ids["target"] = self._compute_ids(self.rows, self.grid.fine_grid, 0, 0, 0)
        return self._ids["target"]

    def reference_ids(self, shape, placement):
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
    def scale(self):
        return position_scale(self.grid.factor, self.positions)
