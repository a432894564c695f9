"""State of one sampling run of a feature cache: created by the OUTER_SAMPLE wrapper, dropped in its
`finally`. Nothing here outlives the run (no state on nodes, modules or patchers)."""
from dataclasses import dataclass, field

from ..adapters import for_model
from .schedule import FULL, StepPlan, resolve_schedule
from .store import SlotStore


@dataclass
class CallContext:
    """One DIFFUSION_MODEL call (a batch of conds at one sigma)."""
    slots: object                 # the family's CacheSlots
    evaluation: object            # schedule.Evaluation of this sigma, None when no plan is known
    facts: dict = field(default_factory=dict)
    force_full: bool = False      # set when re-running a call whose forecast was not finite
    module_math: bool = True      # False: the family cannot follow this call's math per module
    forecasted: bool = False      # some block of this call used a forecast
    stored: bool = False          # some block of this call updated the cache


class RunState:
    def __init__(self, config):
        self.config = config
        self.forecaster = config.make_forecaster()
        self.observer = getattr(config, "observer", None)
        self.compute_only = bool(getattr(config, "compute_only", False))
        self.store = SlotStore()
        self.plan = None
        self._plan_sigmas = None
        self.call = None
        self._slots = {}
        self._blocks = {}
        self._evaluations = {}
        self.evaluations = {"full": 0, "forecast": 0}
        self.block_calls = {"full": 0, "forecast": 0}
        self.fallbacks = 0
        self.fallback_blocks = set()
        self.block_granularity_reasons = set()
        self.peak_bytes = 0
        self.interrupted = False

    # -- schedule ------------------------------------------------------------------------------
    def prepare_plan(self, sample_sigmas, model_sampling):
        if sample_sigmas is None or sample_sigmas is self._plan_sigmas:
            return
        self._plan_sigmas = sample_sigmas
        if self.plan is not None and self.plan.matches(sample_sigmas):
            return
        if self.plan is not None:  # a new schedule inside one run: positions no longer compare
            self.store.clear()
        c = self.config
        start = model_sampling.percent_to_sigma(c.start_percent) if model_sampling is not None else float("inf")
        end = model_sampling.percent_to_sigma(c.end_percent) if model_sampling is not None else 0.0
        interval, warmup_steps = resolve_schedule(c, len(sample_sigmas) - 1)
        self.plan = StepPlan(sample_sigmas, interval, warmup_steps, float(start), float(end))
        self._evaluations.clear()

    def evaluation(self, sigma):
        """Evaluation (position, step, mode) at this sigma; all full when no plan is known."""
        if self.plan is None:
            return None
        key = float(sigma)
        ev = self._evaluations.get(key)
        if ev is None:
            ev = self._evaluations[key] = self.plan.evaluation(key)
        return ev

    def count_evaluation(self, ev):
        self.evaluations[FULL if ev is None else ev.mode] += 1

    # -- model calls ---------------------------------------------------------------------------
    def slots_for(self, diffusion_model):
        """The family's CacheSlots for the DiT being called (looked up once per run)."""
        key = id(diffusion_model)
        if key not in self._slots:
            adapter = for_model(diffusion_model, technique=self.config.technique)
            self._slots[key] = adapter.cache_slots(adapter)
        return self._slots[key]

    def block_ref(self, adapter, kind, index):
        key = (id(adapter), kind, index)
        if key not in self._blocks:
            self._blocks.update({(id(adapter), b.kind, b.index): b for b in adapter.blocks()})
        return self._blocks[key]

    def note_stored(self):
        self.peak_bytes = max(self.peak_bytes, self.store.nbytes)

    # -- report --------------------------------------------------------------------------------
    def summary(self, n_steps=None):
        c = self.config
        ev = self.evaluations
        steps = n_steps if n_steps is not None else (self.plan.n_steps if self.plan else 0)
        if self.compute_only:
            line = (f"{c.technique} ({c.describe()}): {steps} steps, {ev['full'] + ev['forecast']} model evaluations, "
                    f"all computed in full; {ev['full']} at steps the cache computes in full")
            return line + (" (run stopped early)" if self.interrupted else "")
        planned = f", schedule {self.plan.speedup:.2f}x" if self.plan else ""
        line = (f"{c.technique} ({c.describe()}): {steps} steps, {ev['full'] + ev['forecast']} model evaluations "
                f"= {ev['full']} full + {ev['forecast']} forecast; cost ratio {self.cost_ratio:.2f}x of block compute"
                f"{planned}; {self.store.n_slots // max(self.store.n_conds, 1)} slots x {self.store.n_conds} "
                f"cond{'' if self.store.n_conds == 1 else 's'}, cache "
                f"{self.peak_bytes / 2 ** 20:.1f} MiB ({c.cache_device})")
        if self.fallbacks:
            line += f"; {self.fallbacks} non-finite forecasts recomputed in full"
        if self.block_granularity_reasons:
            line += f"; block granularity for every block: {', '.join(sorted(self.block_granularity_reasons))}"
        if self.fallback_blocks:
            line += f"; block granularity used for {len(self.fallback_blocks)} blocks without module slots"
        if self.interrupted:
            line += " (run stopped early)"
        return line

    @property
    def cost_ratio(self):
        """Block computations the uncached model would do / those done (forecasts cost ~nothing)."""
        bc = self.block_calls
        return (bc["full"] + bc["forecast"]) / bc["full"] if bc["full"] else 1.0

    def close(self):
        self.forecaster.close()
        self.store.clear()
        self._slots.clear()
        self._blocks.clear()
        self.call = None
