"""State of one sampling run of a feature cache: created by the OUTER_SAMPLE wrapper, dropped in its
`finally`. Nothing here outlives the run (no state on nodes, modules or patchers)."""
from dataclasses import dataclass
from typing import Optional

import torch

from ..adapters import for_model
from .schedule import FORECAST, FULL, StepPlan, resolve_schedule
from .store import SlotStore, chunk_rows

MIXED = "mixed"  # an evaluation whose blocks partly forecast and partly computed in full


@dataclass(frozen=True)
class BlockPlan:
    """What a block does in this run, worked out once: its streams and cached slot names."""
    ref: object                  # adapters.BlockRef
    streams: tuple               # the block's residual streams
    module_slots: Optional[tuple]  # module slots (module granularity), None: block output deltas
    names: tuple                 # the cached slots: module slots or streams

    @property
    def key(self):
        return self.ref.patch_key


class CallContext:
    """One model call (a batch of conds at one sigma), planned by the APPLY_MODEL wrapper.

    Blocks read it inside a possibly compiled region, so it holds no per-step Python numbers they
    branch on: the step's forecast coefficients are tensors, the cache entries of every block are
    looked up here, and full computes of a compiled call are handed back in `captured`."""

    def __init__(self, run, slots, evaluation, rows, uuids, entries, resolution, batch, token_set,
                 forecast, store, force_full=False):
        self.run = run
        self.slots = slots                # the family's CacheSlots
        self.evaluation = evaluation      # schedule.Evaluation, None when no plan is known
        self.position = None if evaluation is None else evaluation.position
        self.rows = rows                  # row slice of each cond chunk
        self.uuids = uuids                # cond uuid of each chunk
        self.entries = entries            # {block key: [entry of each chunk]}
        self.resolution = resolution
        self.batch = batch
        self.token_set = token_set
        self.forecast = forecast          # the plan lets this call forecast (when the cache has it)
        self.store = store                # full computes are kept for later forecasts
        self.keep = store or run.observer is not None
        self.force_full = force_full      # set when re-running a call whose forecast was not finite
        self.coefficients = None          # per chunk: fp32 coefficient tensor (compiled forecasts)
        self.plans_by_math = {m: run.block_plans(slots, m) for m in (True, False)}
        self.plans = None                 # {(kind, index): BlockPlan}, set by activate()
        self.facts = None
        self.module_math = True           # False: the family cannot follow this call's math per module
        self.forecasted = False           # some block of this call used a forecast
        self.stored = False               # some block of this call updated the cache
        self.ran = []                     # FULL / FORECAST per block call
        self.captured = []                # (block key, slot, chunk index, feature) of compiled full computes

    def activate(self, facts, module_math):
        """The DIFFUSION_MODEL wrapper ran: the family's per-call facts and granularity."""
        self.facts = facts
        self.module_math = module_math
        self.plans = self.plans_by_math[module_math]

    def block_entries(self, block_key, shapes, batch, transformer_options, create):
        """(row slices, entries or None, primary) of one block at stream `shapes` (a model may be
        called at several sizes within one call). The call's own token set and batch use entries
        planned for it (primary; created here when `create`, outside compiled code); a call of part
        of the batch under a token set of its own (a ragged token set runs one call per group) gets
        entries looked up here."""
        from .comfy_hooks import token_set_key
        if batch == self.batch and token_set_key(transformer_options) == self.token_set:
            if not (create or self.forecast):
                return self.rows, None, True   # compiled full compute: entries are not read in the graph
            per_shape = self.entries[block_key]
            found = per_shape.get(shapes)
            if found is None and create:
                found = per_shape[shapes] = self.run.entries_at(self.uuids, block_key, self.resolution, shapes)
            return self.rows, found, True
        return (*self.run.sub_call_entries(self, block_key, shapes, batch, transformer_options), False)


class RunState:
    def __init__(self, config):
        self.config = config
        self.forecaster = config.make_forecaster()
        self.observer = getattr(config, "observer", None)
        self.compute_only = bool(getattr(config, "compute_only", False))
        self.store = SlotStore()
        self.plan = None
        self.schedule = None      # (interval, warm-up steps) the plan was built with
        self._plan_sigmas = None
        self.call = None
        self._slots = {}
        self._plans = {}
        self._shapes = {}   # (resolution, block key) -> stream shapes the block was called at
        self._evaluations = {}
        self._ran = None
        self.planned = {FULL: 0, FORECAST: 0}              # evaluations by what the plan said
        self.evaluations = {FULL: 0, FORECAST: 0, MIXED: 0}  # evaluations by what their blocks did
        self.block_calls = {FULL: 0, FORECAST: 0}
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
        interval, warmup_steps = self.schedule = resolve_schedule(c, len(sample_sigmas) - 1)
        use_schedule = getattr(self.forecaster, "use_schedule", None)
        if use_schedule is not None:
            use_schedule(c, interval, warmup_steps)
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

    def begin_evaluation(self, ev):
        """A model evaluation (CALC_COND_BATCH) starts: count the plan, collect what its blocks do."""
        self.planned[FULL if ev is None else ev.mode] += 1
        self._ran = set()

    def end_evaluation(self):
        """Count the evaluation by what its blocks did: all full, all forecast, or mixed."""
        ran, self._ran = self._ran, None
        kind = MIXED if len(ran or ()) > 1 else next(iter(ran)) if ran else FULL
        self.evaluations[kind] += 1

    # -- model calls ---------------------------------------------------------------------------
    def slots_for(self, diffusion_model):
        """The family's CacheSlots for the DiT being called (looked up once per run)."""
        key = id(diffusion_model)
        if key not in self._slots:
            adapter = for_model(diffusion_model, technique=self.config.technique)
            self._slots[key] = adapter.cache_slots(adapter)
        return self._slots[key]

    def block_plans(self, slots, module_math):
        """{(kind, index): BlockPlan} of every block of the family, built once per run."""
        key = (id(slots), bool(module_math))
        plans = self._plans.get(key)
        if plans is None:
            plans = self._plans[key] = {}
            module = self.config.granularity == "module" and module_math
            for ref in slots.adapter.blocks():
                streams = tuple(slots.streams(ref))
                module_slots = slots.module_slots(ref) if module else None
                if module and module_slots is None:
                    self.fallback_blocks.add(ref.patch_key)
                module_slots = tuple(module_slots) if module_slots is not None else None
                plans[(ref.kind, ref.index)] = BlockPlan(ref, streams, module_slots, module_slots or streams)
        return plans

    def prepare_call(self, slots, evaluation, x, transformer_options, resolution, force_full=False):
        """Plan one model call (eagerly, outside compiled code): which conds hold which rows, their
        cache entries at every block (at the stream shapes seen so far), whether the call may
        forecast and store, the forecast coefficients."""
        from .comfy_hooks import token_set_key
        uuids = list(transformer_options.get("uuids") or [])
        chunks = chunk_rows(x.shape[0], uuids)
        uuids = [u for u, _ in chunks]
        for uuid in uuids:
            self.store.use(uuid, resolution)
        entries = {}
        for ref in slots.adapter.blocks():
            k = ref.patch_key
            entries[k] = {shapes: self.entries_at(uuids, k, resolution, shapes)
                          for shapes in self._shapes.get((resolution, k), ())}
        ev = evaluation
        forecast = (ev is not None and ev.mode == FORECAST and not force_full and not self.compute_only)
        store = ev is not None and not self.compute_only and self.plan.forecasts_after(ev.step)
        call = CallContext(self, slots, ev, [r for _, r in chunks], uuids, entries, resolution,
                           x.shape[0], token_set_key(transformer_options), forecast, store, force_full)
        if forecast:
            call.coefficients = self._coefficients(call, x.device)
        return call

    def entries_at(self, uuids, block_key, resolution, shapes):
        """[entry of each cond] of a block at stream `shapes`; remembers the shapes for later calls."""
        self._shapes.setdefault((resolution, block_key), set()).add(shapes)
        return [self.store.entry(u, block_key, resolution + (shapes,)) for u in uuids]

    def _coefficients(self, call, device):
        """Per cond chunk, the forecast coefficients at this position as an fp32 tensor (for traced
        forecasts); None when the forecaster has no coefficient form. Every slot of a cond was
        stored at the same full steps, so one state per cond gives the distance."""
        coefficients = getattr(self.forecaster, "coefficients", None)
        if coefficients is None or not hasattr(self.forecaster, "predict_with"):
            return None
        out = []
        for i in range(len(call.rows)):
            state = next((s for per_shape in call.entries.values() for entries in per_shape.values()
                          for s in entries[i].values()), None)
            c = coefficients(state, call.position) if state is not None else ()
            out.append(torch.tensor(list(c), dtype=torch.float32, device=device))
        return out

    def sub_call_entries(self, call, block_key, shapes, batch, transformer_options):
        """Entries of a call made for part of the batch under its own token set (one group of a
        ragged token set): looked up per block."""
        from .comfy_hooks import resolution_key
        chunks = chunk_rows(batch, list(transformer_options.get("uuids") or call.uuids))
        resolution = resolution_key(transformer_options) + (shapes,)
        return [r for _, r in chunks], [self.store.entry(u, block_key, resolution) for u, _ in chunks]

    def keep(self, call, block_key, shapes, names, rows, entries, feats):
        """A full compute of one block at stream `shapes`: show it to the observer, update the cache."""
        ev = call.evaluation
        if self.observer is not None:
            for name in names:
                for uuid, r in zip(call.uuids, rows):
                    self.observer(name, block_key, uuid, feats[name][r], ev)
        if call.store:
            device = "cpu" if self.config.cache_device == "cpu" else None
            update = self.forecaster.update
            for r, e in zip(rows, entries):
                for name in names:  # fresh tensors: stored without a copy
                    e[name] = update(e.get(name), feats[name][r], ev.position, (block_key, name), device, owned=True)
            call.stored = True

    def note_ran(self, call):
        """The call's output stands: its blocks' kinds make its evaluation's kind (end_evaluation)."""
        if self._ran is not None:
            self._ran.update(k for k in (FULL, FORECAST) if k in call.ran)

    def finish_call(self, call):
        """After the model call: store what compiled blocks captured, count what the blocks did."""
        if call.captured:
            by_block = {}
            for block_key, shapes, name, i, feat in call.captured:
                by_block.setdefault((block_key, shapes), {}).setdefault(name, {})[i] = feat
            for (block_key, shapes), feats in by_block.items():
                _, entries, _ = call.block_entries(block_key, shapes, call.batch, {}, create=True)
                self.keep(call, block_key, shapes, tuple(feats), list(range(len(call.rows))), entries, feats)
            call.captured = []
        n_full, n_forecast = call.ran.count(FULL), call.ran.count(FORECAST)
        self.block_calls[FULL] += n_full
        self.block_calls[FORECAST] += n_forecast
        if call.stored:
            self.peak_bytes = max(self.peak_bytes, self.store.nbytes)

    # -- report --------------------------------------------------------------------------------
    def summary(self, n_steps=None):
        """The run's log line: evaluations counted by what their blocks did (full / forecast /
        mixed), the block-level cost ratio, and the plan's counts where they differ from it."""
        c = self.config
        ev = self.evaluations
        n_eval = ev[FULL] + ev[FORECAST] + ev[MIXED]
        steps = n_steps if n_steps is not None else (self.plan.n_steps if self.plan else 0)
        if self.compute_only:
            line = (f"{c.technique} ({c.describe()}): {steps} steps, {n_eval} model evaluations, "
                    f"all computed in full; {self.planned[FULL]} at steps the cache computes in full")
            return line + (" (run stopped early)" if self.interrupted else "")
        planned = f", schedule {self.plan.speedup:.2f}x" if self.plan else ""
        mixed = f" + {ev[MIXED]} mixed" if ev[MIXED] else ""
        settings = c.describe(*self.schedule) if self.schedule else c.describe()
        line = (f"{c.technique} ({settings}): {steps} steps, {n_eval} model evaluations "
                f"= {ev[FULL]} full + {ev[FORECAST]} forecast{mixed}; cost ratio {self.cost_ratio:.2f}x of block "
                f"compute{planned}; {self.store.n_slots // max(self.store.n_conds, 1)} slots x {self.store.n_conds} "
                f"cond{'' if self.store.n_conds == 1 else 's'}, cache "
                f"{self.peak_bytes / 2 ** 20:.1f} MiB ({c.cache_device})")
        if self.fallbacks:
            line += f"; {self.fallbacks} non-finite forecasts recomputed in full"
        if self.block_granularity_reasons:
            line += f"; block granularity for every block: {', '.join(sorted(self.block_granularity_reasons))}"
        if self.fallback_blocks:
            line += f"; block granularity used for {len(self.fallback_blocks)} blocks without module slots"
        if (self.planned[FULL], self.planned[FORECAST]) != (ev[FULL], ev[FORECAST]) or ev[MIXED]:
            line += (f"; the plan had {self.planned[FULL]} full + {self.planned[FORECAST]} forecast "
                     "(forecasts without a cache entry for the call's token set or shapes ran in full)")
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
        self._plans.clear()
        self._shapes.clear()
        self.call = None
