"""Wan 2.1 / 2.2: comfy.ldm.wan.model.WanModel (text-to-video and image-to-video variants).

Latents are 5-D [B, C, T, H, W]; patch (1, 2, 2). Self-attention runs over image tokens only (text
enters by cross-attention), so a "joint sequence" is the image tokens; ids (frame, row, col).
Blocks are replaceable as ("double_block", i) with {"img", "txt", "vec", "pe"} -> {"img"}.
"""
from .base import BlockRef, ModelAdapter, grid_len, stack_ids


class WanAdapter(ModelAdapter):
    family = "wan"
    display_name = "Wan 2.x"
    text_first = True

    @classmethod
    def matches(cls, dm):
        from comfy.ldm.wan.model import WanModel
        return isinstance(dm, WanModel)

    @property
    def patch_size(self):
        return tuple(self.model.patch_size)

    def blocks(self):
        return [BlockRef("double", i, b) for i, b in enumerate(self.model.blocks)]

    def token_grid(self, latent_shape):
        t, h, w = latent_shape[-3:]
        pt, ph, pw = self.patch_size
        return grid_len(t, pt), grid_len(h, ph), grid_len(w, pw)

    def token_layout(self, latent_shape, reference_shapes=(), n_text=0):
        return super().token_layout(latent_shape, reference_shapes, n_text=0)  # text is cross-attended

    def positions(self, frames, rows, cols, grid):
        return stack_ids(frames, rows, cols)
