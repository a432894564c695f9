"""What every model-family adapter answers: token layout, positions, blocks.

An adapter wraps the DiT module (`patcher.model.diffusion_model`) of one family. Techniques ask it
questions and never look at the model class themselves, so adding a family is adding one file.
"""
import inspect
from dataclasses import dataclass, field

import torch


class UnsupportedModelError(ValueError):
    """The model is not of a family this pack knows; the message names the supported ones."""


class UnsupportedInputError(ValueError):
    """An input (conditioning, mask, option) that a technique cannot honour; the message says why."""


@dataclass(frozen=True)
class TokenLayout:
    """Where each kind of token sits in the joint attention sequence of one model call.

    `text_first`: the joint sequence is [text, image] (FLUX, Qwen-Image) rather than [image, text]
    (HunyuanVideo). The image stream itself is always [target, reference_1, reference_2, ...]."""
    n_text: int
    n_target: int
    n_reference: tuple = field(default_factory=tuple)
    text_first: bool = True

    @property
    def n_image(self):
        return self.n_target + sum(self.n_reference)

    @property
    def n_total(self):
        return self.n_text + self.n_image

    @property
    def text(self):
        return slice(0, self.n_text) if self.text_first else slice(self.n_image, self.n_total)

    @property
    def image(self):
        return slice(self.n_text, self.n_total) if self.text_first else slice(0, self.n_image)

    @property
    def target(self):
        start = self.image.start
        return slice(start, start + self.n_target)

    @property
    def reference(self):
        start = self.image.start + self.n_target
        return slice(start, start + sum(self.n_reference))


@dataclass(frozen=True)
class BlockRef:
    kind: str   # "double" or "single": the key used in patches_replace["dit"][(kind + "_block", index)]
    index: int
    module: object

    @property
    def patch_key(self):
        return (f"{self.kind}_block", self.index)


def call_arguments(diffusion_model, args, kwargs) -> dict:
    """A DIFFUSION_MODEL call's arguments by name, bound to the model's own `_forward` signature
    (so positions that differ between ComfyUI releases never matter); extra keyword arguments sit
    under "kwargs"."""
    bound = inspect.signature(diffusion_model._forward).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def reference_method(diffusion_model, call, default):
    """How the call places its reference latents: the call's ref_latents_method, else the model's
    own default_ref_method (on the model or its params), else `default`; None without references."""
    if not call.get("ref_latents"):
        return None
    explicit = (call.get("kwargs") or {}).get("ref_latents_method")
    if explicit:
        return explicit
    params = getattr(diffusion_model, "params", None)
    return getattr(diffusion_model, "default_ref_method", None) or getattr(params, "default_ref_method", None) or default


def grid_len(n, patch):
    """Tokens along one axis for n latent pixels, as ComfyUI's DiTs compute it."""
    return (n + patch // 2) // patch


def tile_offset(h, w, ref_h, ref_w):
    """Where ComfyUI's "offset" method puts the next reference latent on the canvas of the previous
    ones (size h x w, latent pixels): right of them or below. -> (h_offset, w_offset, new h, new w)."""
    h_off = w_off = 0
    if ref_h + h > ref_w + w:
        w_off = w
    else:
        h_off = h
    return h_off, w_off, max(h, ref_h + h_off), max(w, ref_w + w_off)


def stack_ids(*axes):
    """[N, len(axes)] float32 ids from per-axis coordinate tensors (broadcast scalars)."""
    n = max(torch.as_tensor(a).numel() for a in axes)
    cols = [torch.as_tensor(a, dtype=torch.float32).flatten().expand(n) if torch.as_tensor(a).numel() == 1
            else torch.as_tensor(a, dtype=torch.float32).flatten() for a in axes]
    return torch.stack(cols, dim=-1)


class ModelAdapter:
    family = "base"
    display_name = "base"
    text_first = True

    def __init__(self, diffusion_model):
        self.model = diffusion_model

    @classmethod
    def matches(cls, diffusion_model):
        raise NotImplementedError

    def blocks(self):
        """All transformer blocks in execution order, as BlockRefs."""
        raise NotImplementedError

    def token_grid(self, latent_shape):
        """(frames, rows, cols) of the token grid for a latent of this shape."""
        raise NotImplementedError

    def positions(self, frames, rows, cols, grid):
        """RoPE ids [N, 3] of image tokens at (possibly fractional) frame/row/col coordinates of a
        token grid of size `grid` = (frames, rows, cols). Coordinates are those of the full grid, so
        a subset of tokens keeps the positions it has in the whole image."""
        raise NotImplementedError

    def grid_positions(self, grid, frame_offset=0):
        """RoPE ids of every token of a full grid, in the model's (frame, row, col) raster order."""
        f, r, c = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), torch.arange(grid[2]), indexing="ij")
        return self.positions(f.flatten() + frame_offset, r.flatten(), c.flatten(), grid)

    def token_layout(self, latent_shape, reference_shapes=(), n_text=0):
        f, h, w = self.token_grid(latent_shape)
        refs = tuple(self.token_grid_size(s) for s in reference_shapes)
        return TokenLayout(n_text=n_text, n_target=f * h * w, n_reference=refs, text_first=self.text_first)

    def token_grid_size(self, latent_shape):
        f, h, w = self.token_grid(latent_shape)
        return f * h * w
