"""Cell geometry of a mixed-resolution token set on a full-resolution carrier latent.

Latents are handled as 5-D [B, C, T, H, W] (a 4-D image latent is T = 1). The DiT patchifies 2x2
latent pixels into one token. At coarse factor f the coarse latent is the latent block-averaged
over f x f pixels, so one coarse token covers 2f x 2f latent pixels = f x f fine tokens: that area
is a *cell*, the unit that is either coarse or upsampled ("up"). Cells tile the image from the
top-left corner; a strip at the bottom / right edge too small for a whole cell (odd or
non-multiple sizes) is always fine, so every latent size works without padding.

Carrier: one full-resolution latent. A fine pixel holds its own value; a coarse cell holds its
coarse latent values nearest-upsampled (each coarse pixel repeated over its f x f block), so
block-averaging recovers them exactly.

Per sample, an `up` mask [T, Hc, Wc] over the cells gives the token sequence: the fine tokens of
up cells and of the edge strip (raster order), then the coarse tokens of the remaining cells
(raster order), each described by a row (t, y0, x0, s) for kernels.tokens.
"""
from dataclasses import dataclass

import torch

from ..dynres.haar import block_mean, nearest_up

POSITION_MODES = ("coarse", "coarse_centred", "fine")


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
            raise ValueError("CellGrid.rows needs the same number of fine tokens in every sample; a TokenSet "
                             "runs samples of different counts as separate groups (TokenSet.groups)")
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
