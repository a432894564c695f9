"""Qwen-Image and Qwen-Image-Edit: comfy.ldm.qwen_image.model.QwenImageTransformer2DModel.

Latents are 5-D [B, 16, 1, H, W]. Joint sequence [text, target, references]. Image positions are
CENTRED on their own grid: row - rows // 2. Text positions start at max(rows // 2, cols // 2) of the
TARGET grid and run along all three axes. Edit references (method "index") take frame index 1, 2, ...
"""
import torch

from .base import BlockRef, ModelAdapter, grid_len, stack_ids


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

    def positions(self, frames, rows, cols, grid):
        # centring uses the FULL grid: never re-centre a crop or a subset
        return stack_ids(frames, torch.as_tensor(rows, dtype=torch.float32) - grid[1] // 2,
                         torch.as_tensor(cols, dtype=torch.float32) - grid[2] // 2)

    def text_positions(self, n_text, grid):
        start = round(max(grid[1] // 2, grid[2] // 2))
        return torch.arange(start, start + n_text, dtype=torch.float32)[:, None].repeat(1, 3)
