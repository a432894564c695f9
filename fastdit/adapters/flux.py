"""FLUX.1 (dev, schnell) and FLUX.1-Kontext: comfy.ldm.flux.model.Flux.

Joint sequence [text, target, references]; text tokens all at RoPE position (0, 0, 0); target
tokens at (0, row, col); Kontext references appended after the target with frame index 1
(method "offset", the Flux.1 default) at their own (row, col) grid.
"""
import torch

from .base import BlockRef, ModelAdapter, grid_len, stack_ids


class FluxAdapter(ModelAdapter):
    family = "flux"
    display_name = "FLUX.1 (dev / schnell / Kontext)"
    text_first = True

    @classmethod
    def matches(cls, dm):
        from comfy.ldm.flux.model import Flux
        if type(dm) is not Flux:  # Chroma, Flux.2 variants etc. are other classes or params
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

    def positions(self, frames, rows, cols, grid):
        return stack_ids(frames, rows, cols)  # frame axis = Kontext image index (0 = target)

    def text_positions(self, n_text, grid):
        return torch.zeros(n_text, 3)
