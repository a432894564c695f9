"""Which solver steps compute in full and which forecast (the plan of TaylorSeer's FLUX code).

Everything here is derived from the sampler's sigma schedule (`transformer_options["sample_sigmas"]`)
and the sigma of the current model evaluation, never from call counts: a Heun or DPM-2 step
evaluates the model two or three times, and cond and uncond may arrive batched or in separate
calls, but each evaluation maps to one position on the schedule.
"""
import math
from dataclasses import dataclass

FULL = "full"
FORECAST = "forecast"

_RTOL = 1e-4  # same tolerance as comfy/context_windows.py uses to find a sigma in sample_sigmas


def taylorseer_plan(allowed, interval, warmup_steps):
    """FULL/FORECAST per solver step, the TaylorSeer-family rule of `cal_type.py`:

        counter = 0
        for s in steps: FULL if s < warmup or counter == N-1 (counter = 0) else FORECAST (counter += 1)

    `allowed[s]` is False outside the caching window (start/end percent): such a step is FULL and,
    like any full step, restarts the counter. No forced full compute on the last step."""
    plan, counter = [], 0
    for s, ok in enumerate(allowed):
        if s < warmup_steps or not ok or counter >= interval - 1:
            plan.append(FULL)
            counter = 0
        else:
            plan.append(FORECAST)
            counter += 1
    return plan


def _as_floats(sigmas):
    if hasattr(sigmas, "tolist"):
        sigmas = sigmas.flatten().tolist()
    return [float(s) for s in sigmas]


def step_position(sigma, sample_sigmas):
    """Position of `sigma` on the schedule as a float step index.

    A sigma of the schedule gives its index (with a relative tolerance); a sigma between two
    entries (DPM-2 midpoints, ancestral/SDE sub-steps) gives a fractional index, linear in sigma.
    Sigmas above the first entry clamp to 0, below the last to len-1."""
    sig = _as_floats(sample_sigmas)
    s = float(sigma)
    for i, v in enumerate(sig):
        if math.isclose(s, v, rel_tol=_RTOL, abs_tol=1e-9):
            return float(i)
    if not sig:
        return 0.0
    if s >= sig[0]:
        return 0.0
    for i in range(len(sig) - 1):
        hi, lo = sig[i], sig[i + 1]
        if hi >= s >= lo and hi > lo:
            return i + (hi - s) / (hi - lo)
    return float(len(sig) - 1)


@dataclass(frozen=True)
class Evaluation:
    """One model evaluation: where it sits on the schedule and whether it may forecast."""
    position: float
    step: int
    mode: str


class StepPlan:
    """The full/forecast plan of one sampling run, built from its sigma schedule."""

    def __init__(self, sample_sigmas, interval, warmup_steps, start_sigma=math.inf, end_sigma=0.0):
        self.sigmas = _as_floats(sample_sigmas)
        self.n_steps = max(len(self.sigmas) - 1, 1)
        steps = self.sigmas[:self.n_steps] if len(self.sigmas) > 1 else self.sigmas
        allowed = [(s <= start_sigma * (1 + _RTOL)) and (s > end_sigma) for s in steps]
        self.modes = taylorseer_plan(allowed, interval, warmup_steps)

    def matches(self, sample_sigmas):
        return _as_floats(sample_sigmas) == self.sigmas

    def evaluation(self, sigma):
        pos = step_position(sigma, self.sigmas)
        step = min(int(math.floor(pos + 1e-6)), self.n_steps - 1)
        return Evaluation(pos, step, self.modes[step])

    def forecasts_after(self, step):
        """True if a step after `step` forecasts (else features need not be stored)."""
        return FORECAST in self.modes[step + 1:]

    @property
    def full_steps(self):
        return self.modes.count(FULL)

    @property
    def speedup(self):
        """Steps / full steps: the FLOPs speed-up quoted by the TaylorSeer-family papers."""
        return len(self.modes) / max(self.full_steps, 1)


def resolve_schedule(config, n_steps):
    """(interval, warm-up steps) of a cache config for a run of `n_steps` solver steps."""
    return int(config.interval), int(config.warmup_steps)
