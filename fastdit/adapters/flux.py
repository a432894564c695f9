"""FLUX.1 (dev, schnell) and FLUX.1-Kontext: comfy.ldm.flux.model.Flux.

Joint sequence [text, target, references]; text tokens all at RoPE position (0, 0, 0); target
tokens at (0, row, col); Kontext references appended after the target with frame index 1
(method "offset", the Flux.1 default) at their own (row, col) grid.
"""
import torch

from .base import BlockRef, ModelAdapter, grid_len


class FluxAdapter(ModelAdapter):
    family = "flux"
    display_name = "FLUX.1 (dev / schnell / Kontext)"
    text_first = True

    @classmethod
    def matches(cls, dm):
        from comfy.ldm.flux.model import Flux
        if not isinstance(dm, Flux) or type(dm).__module__ != Flux.__module__:
            return False
        params = dm.params
        return len(params.axes_dim) == 3 and not getattr(params, "global_modulation", False)

    @property
    def patch_size(self):
        return self.model.patch_size

    def blocks(self):
        return ([BlockRef("double", i, b) for i, b in enumerate(self.model.double_blocks)]
                + [BlockRef("single", i, b) for i, b in enumerate(self.model.single_blocks)])

    def token_grid(self, latent_shape):
        h, w = latent_shape[-2:]
        return 1, grid_len(h, self.patch_size), grid_len(w, self.patch_size)

    def positions(self, rows, cols, index=0.0):
        """RoPE ids [N, 3] for tokens at (possibly fractional) grid rows/cols, frame `index`."""
        rows = torch.as_tensor(rows, dtype=torch.float32).flatten()
        cols = torch.as_tensor(cols, dtype=torch.float32).flatten()
        return torch.stack([torch.full_like(rows, float(index)), rows, cols], dim=-1)

    def grid_positions(self, h_len, w_len, index=0.0):
        """RoPE ids of a full h_len x w_len grid in row-major token order (what process_img gives)."""
        r, c = torch.meshgrid(torch.arange(h_len), torch.arange(w_len), indexing="ij")
        return self.positions(r, c, index)

    def text_positions(self, n_text, grid_hw=None):
        return torch.zeros(n_text, 3)
