"""Token sets: which tokens a model call computes, per sample, and the forward that runs them.

Shared by the dynamic-resolution samplers (Fresco, SpecEdit) and read by the feature caches:
  grid       cells, the full-resolution carrier latent, token rows and their RoPE coordinates
  token_set  TokenSet: per-sample cell masks, groups of equal token count, the set's `key`
  forward    the DIFFUSION_MODEL wrapper: gather, run, scatter per group (LAYOUT_KEY)
Gather / scatter themselves are kernels.tokens (Triton beside a torch reference).
"""
from .forward import LAYOUT_KEY, WRAPPER_KEY, mixed_adapter, mixed_forward, mixed_resolution_wrapper
from .grid import POSITION_MODES, CellGrid, as5d, position_scale, row_coordinates
from .token_set import FINE, CallCount, TokenSet, token_set_key

__all__ = ["CallCount", "CellGrid", "FINE", "LAYOUT_KEY", "POSITION_MODES", "TokenSet", "WRAPPER_KEY", "as5d",
           "mixed_adapter", "mixed_forward", "mixed_resolution_wrapper", "position_scale", "row_coordinates",
           "token_set_key"]
