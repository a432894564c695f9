"""SpecEdit's options: what the draft and the verify pass are told."""
import dataclasses
from dataclasses import dataclass

MEASURES = ("latent", "vae")
FACTORS = (2, 4)
RESOLUTIONS = ("auto", "coarse", "full")
# resolution "auto": a coarse draft once its grid has this many cells (coarse tokens) along the shorter
# side, else a full-resolution one. Measured on demo-kontext: with 8 coarse tokens per side (32x32
# latent) the draft cannot resolve small objects and loses edits; with 16 (64x64 latent) the coarse
# draft was both cheaper and closer to the baseline edit than the full-resolution one.
AUTO_COARSE_MIN_CELLS = 16
RING_MODES = ("all", "unchanged")
FAMILIES = {"flux": "FLUX.1 Kontext", "qwen_image": "Qwen-Image-Edit"}
SUPPORTED = "FLUX.1 Kontext and Qwen-Image-Edit (a FLUX.1 or Qwen-Image model with a reference image)"


@dataclass(frozen=True)
class DraftOptions:
    draft_fraction: float = 0.2    # share of the steps run as the draft
    factor: int = 2                # coarse downsampling per axis of the draft and of locked cells
    measure: str = "latent"        # discrepancy.MEASURES
    resolution: str = "auto"       # RESOLUTIONS: the draft's tokens (coarse: target and reference on the coarse grid)

    def validated(self) -> "DraftOptions":
        if self.measure not in MEASURES:
            raise ValueError(f"SpecEdit discrepancy must be one of {', '.join(MEASURES)}, not {self.measure!r}")
        if int(self.factor) not in FACTORS:
            raise ValueError(f"SpecEdit coarse factor must be one of {', '.join(map(str, FACTORS))}, not {self.factor!r}")
        if not 0.0 < self.draft_fraction < 1.0:
            raise ValueError(f"SpecEdit draft fraction must be between 0 and 1 (exclusive), not {self.draft_fraction}")
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"SpecEdit draft resolution must be one of {', '.join(RESOLUTIONS)}, "
                             f"not {self.resolution!r}")
        return DraftOptions(float(self.draft_fraction), int(self.factor), self.measure, self.resolution)

    def for_latent(self, latent_shape) -> "DraftOptions":
        """These options with resolution "auto" decided for a latent of `latent_shape`."""
        if self.resolution != "auto":
            return self
        from ..tokens.grid import CellGrid
        grid = CellGrid.of(latent_shape, self.factor)
        coarse = min(grid.cell_rows, grid.cell_cols) >= AUTO_COARSE_MIN_CELLS
        return dataclasses.replace(self, resolution="coarse" if coarse else "full")

    def draft_steps(self, steps: int) -> int:
        """Draft steps of a run of `steps` (at least one draft and one verify step)."""
        if steps < 2:
            raise ValueError(f"SpecEdit needs at least 2 steps (one draft, one verify), not {steps}")
        return min(steps - 1, max(1, round(self.draft_fraction * steps)))


@dataclass(frozen=True)
class VerifyOptions:
    threshold: float = 0.1         # a cell is edited where its discrepancy is at least this
    budget: float = 0.0            # > 0: refine this share of the cells (highest discrepancy) instead
    coverage_stride: int = 4       # every stride-th cell per axis is refined too (0: no coverage set)
    dilation: int = 1              # margin of edited cells, in cells (8-neighbourhood)
    blend: float = 0.8             # refined cells touching a locked one: blend * source + (1 - blend) * edit
    global_share: float = 0.7      # more edited cells than this: a global edit, run at full resolution
    positions: str = "fine"        # RoPE units of verify's mixed tokens (dynres.layout.POSITION_MODES)
    ring: str = "unchanged"        # RING_MODES: which ring cells are blended (locking.compose)

    def validated(self) -> "VerifyOptions":
        for name, lo, hi in (("threshold", 0.0, 1e9), ("budget", 0.0, 1.0), ("blend", 0.0, 1.0),
                             ("global_share", 0.0, 1.0)):
            v = float(getattr(self, name))
            if not lo <= v <= hi:
                raise ValueError(f"SpecEdit {name} must be between {lo:g} and {hi:g}, not {v}")
        from ..dynres.layout import POSITION_MODES
        if self.positions not in POSITION_MODES:
            raise ValueError(f"SpecEdit positions must be one of {', '.join(POSITION_MODES)}, not {self.positions!r}")
        if self.ring not in RING_MODES:
            raise ValueError(f"SpecEdit ring must be one of {', '.join(RING_MODES)}, not {self.ring!r}")
        for name in ("coverage_stride", "dilation"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"SpecEdit {name} must be >= 0, not {getattr(self, name)}")
        return self
