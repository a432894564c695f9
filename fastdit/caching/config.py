"""Immutable settings of a feature cache, validated with messages that name what is allowed."""
from dataclasses import dataclass
from typing import Optional

from . import forecasters
from .schedule import check_speed, describe_schedule

GRANULARITIES = ("module", "block")
CACHE_DEVICES = ("compute", "cpu")


@dataclass(frozen=True)
class TaylorCacheConfig:
    """HiCache and its baselines (defaults: the HiCache paper's FLUX.1-dev setting N=7, O=2, σ=0.5).

    interval: N, a full compute every N steps after warm-up (1 = never forecast)
    order: O, highest finite difference kept (ignored by "reuse", which keeps D0 only)
    sigma: Hermite contraction σ (hicache, hi-taylor)
    warmup_steps: first_enhance, full steps at the start
    start_percent / end_percent: the part of the schedule where forecasting may act
    granularity: "module" (the paper's per-module slots) or "block" (block output deltas)
    cache_device: "compute" (the model's device) or "cpu" (offload the cached features)
    speed: "custom" (interval and warmup_steps as given) or a preset of schedule.SPEED_PRESETS that
           derives both from the run's step count (schedule.resolve_schedule); with a preset,
           warmup_steps only sets where finite differences may start (from step warmup_steps - 2)"""
    interval: int = 7
    order: int = 2
    sigma: float = 0.5
    warmup_steps: int = 3
    mode: str = "hicache"
    start_percent: float = 0.0
    end_percent: float = 1.0
    granularity: str = "module"
    cache_device: str = "compute"
    technique: str = "HiCache"
    speed: str = "custom"

    def __post_init__(self):
        check_speed(self.speed)
        if self.mode not in forecasters.MODES:
            raise ValueError(f"mode must be one of {', '.join(forecasters.MODES)}, not {self.mode!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, not {self.granularity!r}")
        if self.cache_device not in CACHE_DEVICES:
            raise ValueError(f"cache_device must be one of {', '.join(CACHE_DEVICES)}, not {self.cache_device!r}")
        if int(self.interval) < 1:
            raise ValueError(f"interval must be >= 1 (1 = compute every step), got {self.interval}")
        if not 0 <= int(self.order) <= 3:
            raise ValueError(f"order must be 0 to 3, got {self.order}")
        if not 0.0 < float(self.sigma) <= 2.0:
            raise ValueError(f"sigma (Hermite contraction) must be in (0, 2], got {self.sigma}")
        if int(self.warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise ValueError("need 0 <= start_percent <= end_percent <= 1, got "
                             f"start_percent={self.start_percent}, end_percent={self.end_percent}")

    @property
    def max_order(self):
        return 0 if self.mode == "reuse" else int(self.order)

    def describe(self, interval: Optional[int] = None, warmup_steps: Optional[int] = None) -> str:
        """Settings for the log line; pass the run's resolved interval and warm-up (resolve_schedule)."""
        mode = self.mode if interval is None else forecast_mode(self, interval)
        extra = f", σ={self.sigma:g}" if mode in ("hicache", "hi-taylor") else ""
        switched = f" (one step ahead: {mode} coefficients)" if mode != self.mode else ""
        return (f"{self.mode}, {describe_schedule(self, interval, warmup_steps)}{switched}, O={self.max_order}{extra}, "
                f"{self.granularity}")

    def make_forecaster(self):
        return TaylorForecaster(self)


def forecast_mode(config: TaylorCacheConfig, interval: int) -> str:
    """The forecast rule of a run at its resolved interval. HiCache's Hermite contraction (σ) damps
    extrapolation over long spans; a speed preset that resolves to N=2 forecasts only one step ahead,
    where the undamped Taylor coefficients (TaylorSeer's: 1 and 1/2) land closer to the uncached run
    (demo-flux, 50 steps, 8 prompts: 47.6 dB against 45.6 for σ=0.5, docs/hicache.md). A custom
    schedule keeps the mode it was given."""
    if config.speed != "custom" and config.mode == "hicache" and int(interval) <= 2:
        return "taylorseer"
    return config.mode


class TaylorForecaster:
    """The forecaster of the TaylorSeer family (interface.Forecaster): a slot's state is a
    `forecasters.History` of finite differences; the forecast is one fused axpy."""

    def __init__(self, config):
        self.max_order = config.max_order
        self.warmup_steps = int(config.warmup_steps)
        self.mode = config.mode
        self.sigma = float(config.sigma)

    def use_schedule(self, config, interval: int, warmup_steps: int) -> None:
        """The run's schedule is resolved (RunState.prepare_plan): pick the rule for its interval."""
        self.mode = forecast_mode(config, interval)

    def update(self, state, feature, position, slot=None, cache_device=None, owned=False):
        return forecasters.update(state, feature, position, self.max_order, self.warmup_steps, cache_device, owned)

    def predict(self, state, position, out):
        from ...kernels.forecast import forecast
        return forecasters.predict(state, self.mode, self.max_order, self.sigma, position, forecast, out=out)

    def output_spec(self, state):
        d0 = state.terms[0]
        return tuple(d0.shape), d0.dtype

    def coefficients(self, state, position):
        return forecasters.coefficient_vector(state, self.mode, self.max_order, self.sigma, position)

    def predict_with(self, state, coeffs, out):
        return forecasters.predict_with(state.terms, coeffs, out)

    def close(self):
        pass
