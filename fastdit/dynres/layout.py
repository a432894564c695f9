"""Cells, the carrier latent and the mixed token layout of Fresco's steps.

The geometry and the token set live in fastdit.tokens (shared with SpecEdit and read by the
feature caches); `MixedLayout` is Fresco's name for a TokenSet.
"""
from ..tokens.grid import POSITION_MODES, CellGrid, as5d, position_scale, row_coordinates
from ..tokens.token_set import TokenSet

MixedLayout = TokenSet

__all__ = ["CellGrid", "MixedLayout", "POSITION_MODES", "as5d", "position_scale", "row_coordinates"]
