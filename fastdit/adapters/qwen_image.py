"""Qwen-Image and Qwen-Image-Edit: comfy.ldm.qwen_image.model.QwenImageTransformer2DModel.

Latents are 5-D [B, 16, 1, H, W]. Joint sequence [text, target, references]. Image positions are
CENTRED on their own grid: row - rows // 2. Text positions start at max(rows // 2, cols // 2) of the
TARGET grid and run along all three axes. Edit references (method "index") take frame index 1, 2, ...
"""
import torch

from .base import BlockRef, ModelAdapter, grid_len


class QwenImageAdapter(ModelAdapter):
    family = "qwen_image"
    display_name = "Qwen-Image / Qwen-Image-Edit"
    text_first = True

    @classmethod
    def matches(cls, dm):
        from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
        return isinstance(dm, QwenImageTransformer2DModel)

    @property
    def patch_size(self):
        return self.model.patch_size

    def blocks(self):
        return [BlockRef("double", i, b) for i, b in enumerate(self.model.transformer_blocks)]

    def token_grid(self, latent_shape):
        h, w = latent_shape[-2:]
        return 1, grid_len(h, self.patch_size), grid_len(w, self.patch_size)

    def positions(self, rows, cols, grid_hw, index=0.0):
        """RoPE ids [N, 3] for tokens at (possibly fractional) rows/cols of a grid of size grid_hw.

        Centring uses the FULL grid, so a subset of tokens keeps the positions it has in the full
        image (never re-centre a crop)."""
        h_len, w_len = grid_hw
        rows = torch.as_tensor(rows, dtype=torch.float32).flatten() - (h_len // 2)
        cols = torch.as_tensor(cols, dtype=torch.float32).flatten() - (w_len // 2)
        return torch.stack([torch.full_like(rows, float(index)), rows, cols], dim=-1)

    def grid_positions(self, h_len, w_len, index=0.0):
        r, c = torch.meshgrid(torch.arange(h_len), torch.arange(w_len), indexing="ij")
        return self.positions(r, c, (h_len, w_len), index)

    def text_positions(self, n_text, grid_hw):
        start = round(max(grid_hw[0] // 2, grid_hw[1] // 2))
        return torch.arange(start, start + n_text, dtype=torch.float32)[:, None].repeat(1, 3)
