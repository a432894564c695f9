"""Fresco's stage layout, presets and options (stage splits after RALU's, arXiv 2507.08422).

Three stages share one global sigma schedule: (1) every cell coarse, (2) progressive — before each
step a growing share of the cells is upsampled, (3) everything at full resolution (the remaining
cells are forced up at its first step). The presets use RALU's splits at the NFE of the paper's
operating points against FLUX.1-dev with 50 steps: quality 9/10/11 (NFE 30, reported 2.87x),
balanced 5/6/7 (NFE 18, reported 4.72x), fast 2/3/4 (NFE 9, reported 10.27x). A split is a set of
proportions, scaled to the number of steps asked for.
"""
import math
from dataclasses import dataclass, fields, replace

SELECTIONS = ("variance", "random", "edge")
RENOISES = ("unified", "independent")
EXPANSIONS = ("hadamard", "interpolate")
TRANSITIONS = ("same_t", "snr_matched")
FACTORS = (2, 4)


@dataclass(frozen=True)
class FrescoOptions:
    split: tuple = (5, 6, 7)            # proportions of coarse / progressive / full-resolution steps
    factor: int = 2                     # coarse downsampling per axis
    first_ratio: float = 0.3            # share of cells upsampled at the first progressive step
    ratio_per_step: float = 0.1         # share added at each further progressive step
    selection: str = "variance"         # which cells go up first (selection.py); random / edge: ablations
    renoise: str = "unified"            # noise for new fine pixels: the unified field / fresh noise
    expansion: str = "hadamard"         # Haar/Hadamard children of the coarse estimate / bilinear
    transition: str = "same_t"          # same-t expansion / SNR-matched jump (transition.py)
    positions: str = "coarse"           # RoPE units of the mixed stages (layout.POSITION_MODES)
    variance_window: int = 3            # x0 estimates the variance is taken over (W)
    variance_statistic: str = "temporal"  # temporal: Var over steps; channel: Var_c of the last change

    def validated(self):
        from .layout import POSITION_MODES
        choices = {"selection": SELECTIONS, "renoise": RENOISES, "expansion": EXPANSIONS, "transition": TRANSITIONS,
                   "positions": POSITION_MODES, "variance_statistic": ("temporal", "channel"), "factor": FACTORS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"Fresco option {name} must be one of {', '.join(map(str, allowed))}, "
                                 f"not {getattr(self, name)!r}")
        split = tuple(float(v) for v in self.split)
        if len(split) != 3 or min(split) < 0 or split[2] <= 0:
            raise ValueError(f"Fresco stage split must be three proportions coarse/progressive/full with a "
                             f"positive full-resolution part, not {self.split!r}")
        for name in ("first_ratio", "ratio_per_step"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Fresco option {name} must be between 0 and 1, not {getattr(self, name)}")
        if self.variance_window < 2:
            raise ValueError("Fresco variance_window must be at least 2")
        return replace(self, split=split, factor=int(self.factor))

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class Preset:
    label: str
    split: tuple
    first_ratio: float
    ratio_per_step: float
    nfe: int               # steps of the paper's operating point
    reported: float        # speed-up reported there against 50 FLUX.1-dev steps


PRESETS = {
    "quality": Preset("quality", (9, 10, 11), 0.3, 0.07, 30, 2.87),
    "balanced": Preset("balanced", (5, 6, 7), 0.3, 0.1, 18, 4.72),
    "fast": Preset("fast", (2, 3, 4), 0.1, 0.15, 9, 10.27),
}


def preset_options(name, **overrides):
    """FrescoOptions of a preset ("custom": the overrides alone)."""
    if name == "custom":
        return FrescoOptions(**overrides).validated()
    if name not in PRESETS:
        raise ValueError(f"Fresco preset must be one of {', '.join([*PRESETS, 'custom'])}, not {name!r}")
    p = PRESETS[name]
    base = dict(split=p.split, factor=2, first_ratio=p.first_ratio, ratio_per_step=p.ratio_per_step)
    base.update({k: v for k, v in overrides.items() if k not in base})
    return FrescoOptions(**base).validated()


SPLIT_FORMAT = ("three proportions coarse/progressive/full separated by / or , (e.g. 5/6/7): finite numbers "
                ">= 0, the full-resolution part > 0")


def parse_split(text: str) -> tuple[float, float, float]:
    """'5/6/7' (or '5,6,7') -> (5.0, 6.0, 7.0); ValueError naming SPLIT_FORMAT otherwise."""
    def bad(problem):
        return ValueError(f"stage split {text!r}: {problem}; it must be {SPLIT_FORMAT}")

    parts = [p.strip() for p in str(text).replace(",", "/").split("/")]
    if len(parts) != 3 and all(parts):
        raise bad(f"has {len(parts)} part{'' if len(parts) == 1 else 's'}")
    values = []
    for i, part in enumerate(parts, 1):
        if not part:
            raise bad(f"part {i} is empty")
        try:
            v = float(part)
        except ValueError:
            raise bad(f"{part!r} is not a number") from None
        if not math.isfinite(v):
            raise bad(f"{part!r} is not a finite number")
        if v < 0:
            raise bad(f"{part!r} is negative")
        values.append(v)
    if values[2] <= 0:
        raise bad("the full-resolution part must be > 0")
    return tuple(values)


@dataclass(frozen=True)
class StagePlan:
    coarse: int
    progressive: int
    full: int
    first_ratio: float
    ratio_per_step: float

    @classmethod
    def for_steps(cls, steps, options):
        """Scale the split to `steps` (largest remainders); the last step is always full-res and
        a progressive stage needs at least one coarse step before it (its selection statistic)."""
        split = options.split
        total = sum(split)
        exact = [steps * s / total for s in split]
        counts = [int(e) for e in exact]
        for i in sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)[:steps - sum(counts)]:
            counts[i] += 1
        if counts[2] == 0:                       # take the last step from the larger other stage
            counts[0 if counts[0] >= counts[1] else 1] -= 1
            counts[2] = 1
        coarse, progressive, full = counts
        if coarse == 0:                          # nothing to select from: run those steps at full resolution
            progressive, full = 0, full + progressive
        return cls(coarse, progressive, full, options.first_ratio, options.ratio_per_step)

    @property
    def steps(self):
        return self.coarse + self.progressive + self.full

    def stage(self, step):
        return 1 if step < self.coarse else 2 if step < self.coarse + self.progressive else 3

    def fine_share(self, step):
        """Share of the cells that are up during `step`."""
        stage = self.stage(step)
        if stage == 1:
            return 0.0
        if stage == 3:
            return 1.0
        return min(1.0, self.first_ratio + (step - self.coarse) * self.ratio_per_step)
