"""The mixed-resolution DIFFUSION_MODEL wrapper Fresco installs (fastdit.tokens.forward)."""
from ..tokens.forward import (LAYOUT_KEY, MIXED_FAMILIES, WRAPPER_KEY, mixed_adapter, mixed_forward,
                              mixed_resolution_wrapper, prepare_call, run_groups)

__all__ = ["LAYOUT_KEY", "MIXED_FAMILIES", "WRAPPER_KEY", "mixed_adapter", "mixed_forward",
           "mixed_resolution_wrapper", "prepare_call", "run_groups"]
