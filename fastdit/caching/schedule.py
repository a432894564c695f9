"""Which solver steps compute in full and which forecast (the plan of TaylorSeer's FLUX code).

Everything here is derived from the sampler's sigma schedule (`transformer_options["sample_sigmas"]`)
and the sigma of the current model evaluation, never from call counts: a Heun or DPM-2 step
evaluates the model two or three times, and cond and uncond may arrive batched or in separate
calls, but each evaluation maps to one position on the schedule.

`resolve_schedule(config, n_steps)` decides a run's interval and warm-up: the config's own values,
or those of a speed preset derived from the run's step count (`preset_schedule`).
"""
import math
from dataclasses import dataclass
from typing import Optional

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


# Speed presets: "auto" scales the paper's FLUX.1-dev setting (N=7, 3 warm-up steps at 50 steps) to
# the run's step count; "2x".."4x" aim at that many times fewer full steps; "custom" uses the
# config's own interval and warmup_steps.
SPEED_PRESETS = ("auto", "2x", "3x", "4x", "custom")
PAPER_STEPS, PAPER_INTERVAL, PAPER_WARMUP = 50, 7, 3
MIN_WARMUP = 2  # the forecast needs two full steps before its first slope


def check_speed(speed: str) -> str:
    if speed not in SPEED_PRESETS:
        raise ValueError(f"speed must be one of {', '.join(SPEED_PRESETS)}, not {speed!r}")
    return speed


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def plan_speedup(n_steps: int, interval: int, warmup_steps: int) -> float:
    """Steps / full steps of the plan over `n_steps` steps (no caching window)."""
    full = taylorseer_plan([True] * n_steps, interval, warmup_steps).count(FULL)
    return n_steps / max(full, 1)


def preset_schedule(speed: str, n_steps: int) -> tuple:
    """(interval, warm-up steps) of a speed preset for a run of `n_steps` solver steps.

    Warm-up and the longest forecast span keep the fraction of the schedule the paper's setting
    covers at 50 steps (3 and 7 steps of 50), so "auto" is N=7 with 3 warm-up steps at 50 steps,
    N=4 / warm-up 2 at 30 and N=1 (all full) at 10 steps or fewer. "Nx" picks the interval whose
    plan is nearest N times fewer full steps (the smaller interval on a tie), never beyond auto's."""
    check_speed(speed)
    if speed == "custom":
        raise ValueError("the custom preset has no derived schedule: it uses the interval and warmup_steps inputs")
    n = max(int(n_steps), 1)
    warmup = min(n, max(MIN_WARMUP, _round(PAPER_WARMUP * n / PAPER_STEPS)))
    longest = max(1, _round(PAPER_INTERVAL * n / PAPER_STEPS))
    if speed == "auto":
        return longest, warmup
    target = float(speed[:-1])
    interval = min(range(1, longest + 1), key=lambda i: (abs(plan_speedup(n, i, warmup) - target), i))
    return interval, warmup


def resolve_schedule(config, n_steps: int) -> tuple:
    """(interval, warm-up steps) of a cache config for a run of `n_steps` solver steps: the
    config's own values with speed "custom" (or no speed field), else the preset's."""
    speed = getattr(config, "speed", "custom")
    if speed == "custom":
        return int(config.interval), int(config.warmup_steps)
    return preset_schedule(speed, n_steps)


def describe_schedule(config, interval: Optional[int] = None, warmup_steps: Optional[int] = None) -> str:
    """'N=7, warm-up 3', prefixed by the speed preset when there is one ('speed auto' alone when the
    run's resolved values are not given)."""
    speed = getattr(config, "speed", "custom")
    if speed != "custom" and interval is None:
        return f"speed {speed}"
    interval = config.interval if interval is None else interval
    warmup_steps = config.warmup_steps if warmup_steps is None else warmup_steps
    text = f"N={interval}, warm-up {warmup_steps}"
    return text if speed == "custom" else f"speed {speed}: {text}"
