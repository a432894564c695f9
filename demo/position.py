"""Where am I in the picture? A learned absolute position signal for the demo models.

FLUX gives image tokens only RoPE positions, which are relative and counted in tokens, and puts all
text tokens at the origin; learning "top left" from that (at every resolution) takes far more
training than a demo model gets. The demo models therefore add, after the input embedders, a learned
linear map of Fourier features of each token's *normalised* (row, col) in [0, 1] (like the absolute
position embedding of DiT), through ComfyUI's `post_input` patch. Normalising makes "top left" the
same place at every resolution, so low-resolution drafts are in distribution.

The extent of each image (target, and each reference frame index) is read from the RoPE ids of the
call: `min + max + 1` along each axis, which is the grid size for integer ids and also for grids of
coarser cells placed at their centres in full-grid coordinates (ids (s-1)/2, (s-1)/2 + s, ...).
"""
import math

import torch
from torch import nn

FREQUENCIES = 6


def normalised_coordinates(ids):
    """ids [N,3] (frame index, row, col) -> [N,2] (row, col) in (0,1), per frame index."""
    out = torch.empty(ids.shape[0], 2, dtype=torch.float32, device=ids.device)
    for index in torch.unique(ids[:, 0]):
        sel = ids[:, 0] == index
        for axis in (1, 2):
            v = ids[sel, axis].float()
            extent = v.min() + v.max() + 1
            out[sel, axis - 1] = (v + 0.5) / extent
    return out


def fourier_features(uv, frequencies=FREQUENCIES):
    """[N,2] in (0,1) -> [N, 4 * frequencies]: sin and cos of pi * 2^k * u for each axis."""
    f = math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32, device=uv.device)
    arg = uv[:, :, None] * f
    return torch.cat([arg.sin(), arg.cos()], dim=-1).flatten(1)


class PositionEmbedding(nn.Module):
    def __init__(self, hidden_size, frequencies=FREQUENCIES, init_std=0.0):
        """init_std 0: adds nothing until trained (plain FLUX); training from scratch uses a
        scale comparable to the input embedding, so the signal is there from the first step."""
        super().__init__()
        self.frequencies = frequencies
        self.proj = nn.Linear(4 * frequencies, hidden_size)
        nn.init.normal_(self.proj.weight, std=init_std)
        nn.init.zeros_(self.proj.bias)

    def forward(self, img_ids):
        """img_ids [B,N,3] -> [1,N,hidden] when every row is the same (as FLUX builds them), else
        [B,N,hidden] (a mixed-resolution batch gives each sample its own token layout)."""
        rows = img_ids[:1] if bool((img_ids == img_ids[:1]).all()) else img_ids
        feats = torch.stack([fourier_features(normalised_coordinates(r), self.frequencies) for r in rows])
        w, b = self.proj.weight, self.proj.bias
        return nn.functional.linear(feats.to(w.device, w.dtype), w, b)


def post_input_patch(embedding):
    """A FLUX `post_input` patch (ModelPatcher.set_model_patch(fn, "post_input")) adding `embedding`."""
    def add_demo_position(args):
        img = args["img"]
        out = dict(args)
        out["img"] = img + embedding(args["img_ids"]).to(img.device, img.dtype)
        return out
    return add_demo_position
