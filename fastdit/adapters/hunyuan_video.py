"""HunyuanVideo: comfy.ldm.hunyuan_video.model.HunyuanVideo (3-D patches, video latents).

Latents are 5-D [B, 16, T, H, W]; patch (1, 2, 2). The joint sequence is [image, text] (image
FIRST, unlike FLUX); image ids (frame, row, col); text ids zero. Double and single blocks as FLUX.
"""
from .base import BlockRef, ModelAdapter, grid_len, stack_ids


class HunyuanVideoAdapter(ModelAdapter):
    family = "hunyuan_video"
    display_name = "HunyuanVideo"
    text_first = False

    @classmethod
    def matches(cls, dm):
        from comfy.ldm.hunyuan_video.model import HunyuanVideo
        return isinstance(dm, HunyuanVideo) and len(dm.patch_size) == 3

    @property
    def patch_size(self):
        return tuple(self.model.patch_size)

    def blocks(self):
        return ([BlockRef("double", i, b) for i, b in enumerate(self.model.double_blocks)]
                + [BlockRef("single", i, b) for i, b in enumerate(self.model.single_blocks)])

    def token_grid(self, latent_shape):
        t, h, w = latent_shape[-3:]
        pt, ph, pw = self.patch_size
        return grid_len(t, pt), grid_len(h, ph), grid_len(w, pw)

    def positions(self, frames, rows, cols, grid):
        return stack_ids(frames, rows, cols)


# ---------------------------------------------------------------------------------------------
# Feature-cache slots (HiCache, SVD-Cache): ALGORITHMS §0.3
# HunyuanVideo's blocks are comfy.ldm.flux.layers blocks (flipped_img_txt=True): 20x4 + 40x1 slots
# on the full model. The single-stream slot covers the joint [image, text] sequence.
# ---------------------------------------------------------------------------------------------
from .flux import FluxCacheSlots  # noqa: E402

HunyuanVideoAdapter.cache_slots = FluxCacheSlots
