"""ComfyUI glue of the feature caches: keyed wrappers and `patches_replace["dit"]` blocks.

    OUTER_SAMPLE     creates the run's state (and drops it in `finally`), logs one line per run
    CALC_COND_BATCH  marks a new model evaluation (builds the step plan from sample_sigmas) and
                     afterwards counts what its blocks did (full / forecast / mixed)
    APPLY_MODEL      plans the call outside any compiled region: evaluation, cond row chunks, the
                     cache entries of every block (keyed by token set or shapes, and window),
                     forecast coefficients; afterwards stores what compiled full computes captured;
                     if a call that used forecasts returns NaN/inf, forgets those conds' caches
                     and recomputes the call in full
    DIFFUSION_MODEL  per-call facts of the family (module math or block granularity)
    dit blocks       full compute -> run the block (or its re-expressed module math) and update the
                     slots; forecast -> predict each slot and apply it without attention or MLP

torch.compile (ComfyUI's TorchCompileModel compiles the diffusion model, so DIFFUSION_MODEL and the
blocks run inside the compiled region): everything that changes per step (sigma, positions, store
dicts, counters) is handled in APPLY_MODEL; traced code reads a call object of stable structure,
forecasts with coefficient tensors and leaves cache updates to APPLY_MODEL, so a run compiles a
fixed number of graphs (full, full and store, forecast) whatever its step count.

A technique plugs in with `install(model, config, key)`; `interface.py` says what `config` holds
(schedule fields, granularity, cache_device, describe(), make_forecaster(), an optional observer
called for every full compute, compute_only). The configuration lives in
model_options["transformer_options"][key]; the run state (with the run's forecaster) under
key + "_run" in the per-run copy of model_options. All hook functions are plain closures,
so ComfyUI's clone() (which deep-copies model_options in 0.3.75) never copies model modules.
"""
import logging

import torch

from ..adapters import UnsupportedInputError, call_arguments, for_model
from ..tokens.forward import LAYOUT_KEY  # transformer_options: the token set of a call
from .run import RunState
from .schedule import FORECAST, FULL

is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or torch._dynamo.is_compiling


EASYCACHE_KEY = "easycache"   # where ComfyUI's EasyCache and LazyCache keep their state


def _refuse_easycache(technique, transformer_options):
    """ComfyUI's EasyCache / LazyCache skip whole model calls and reuse the output change: the
    feature cache's full computes then miss the steps it planned, and each cache forecasts from the
    other's output (15 dB from the baseline on a tiny FLUX where each alone gives 23-29 dB)."""
    if EASYCACHE_KEY in transformer_options:
        raise UnsupportedInputError(
            f"{technique} cannot run together with ComfyUI's EasyCache / LazyCache on one model: both skip "
            "model work and each would forecast from the other's reused output. Use one of them.")


def feature_caches(transformer_options):
    """{key: config} of the pack's feature caches installed on a model (HiCache, SVD-Cache, calibration)."""
    return {k: v for k, v in transformer_options.items()
            if k.startswith("fastdit_") and not k.endswith("_run") and hasattr(v, "technique")}


def window_key(transformer_options):
    """The context window a call belongs to (ComfyUI's context windows run one model call per window
    and name it in transformer_options), as a hashable key; None without windows."""
    window = transformer_options.get("context_window")
    if window is None:
        return None
    indices = getattr(window, "index_list", None)
    return tuple(int(i) for i in indices) if indices is not None else id(window)


def _make_outer_sample(key):
    def outer_sample(executor, *args, **kwargs):
        import comfy.model_patcher
        guider = executor.class_obj
        _refuse_easycache(guider.model_options.get("transformer_options", {})[key].technique,
                          guider.model_options.get("transformer_options", {}))
        original = guider.model_options
        guider.model_options = comfy.model_patcher.create_model_options_clone(original)
        opts = guider.model_options.setdefault("transformer_options", {})
        run = opts[key + "_run"] = RunState(opts[key])
        finished = False
        try:
            out = executor(*args, **kwargs)
            finished = True
            return out
        finally:
            run.interrupted = not finished
            sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
            logging.info(run.summary(len(sigmas) - 1 if sigmas is not None else None))
            run.close()
            guider.model_options = original
    return outer_sample


def _make_calc_cond_batch(key):
    """One model evaluation: its plan entry, and afterwards what its blocks did (for the report)."""
    def calc_cond_batch(executor, *args, **kwargs):
        model_options = args[-1] if args and isinstance(args[-1], dict) else kwargs.get("model_options", {})
        opts = model_options.get("transformer_options", {})
        run = opts.get(key + "_run")
        if run is None:
            return executor(*args, **kwargs)
        model, timestep = args[0], args[3] if len(args) > 3 else kwargs["timestep"]
        run.prepare_plan(opts.get("sample_sigmas"), getattr(model, "model_sampling", None))
        run.begin_evaluation(run.evaluation(timestep.flatten()[0]))
        try:
            return executor(*args, **kwargs)
        finally:
            run.end_evaluation()
    return calc_cond_batch


def token_set_key(transformer_options):
    """The key of the token set a call computes (published by a token-set sampler such as Fresco
    under LAYOUT_KEY), or None when the call computes the model's own full token grid."""
    tokens = transformer_options.get(LAYOUT_KEY)
    return None if tokens is None else getattr(tokens, "key", None)


def resolution_key(transformer_options, x=None, tensors=()):
    """What a call's cache entries are keyed by besides cond and block: ("tokens", token-set key)
    when a token set is published, else ("shapes", input shapes); plus the context window."""
    tokens = token_set_key(transformer_options)
    if tokens is not None:
        what = ("tokens", tokens)
    else:
        what = ("shapes", tuple(tuple(t.shape[1:]) for t in ((x,) if x is not None else ()) + tuple(tensors)))
    return what, window_key(transformer_options)


def _shape_tensors(kwargs):
    """Tensors among an apply_model call's conditioning (their shapes set the blocks' token counts)."""
    out = []
    for name in sorted(kwargs):
        v = kwargs[name]
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(t for t in v if isinstance(t, torch.Tensor))
    return out


def all_finite(t):
    """Whether every element of `t` is finite. A sum over a NaN or an infinity is not finite, so one
    reduction answers; the elementwise test runs only when the sum itself overflowed."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _make_apply_model(key):
    """Per model call, outside any compiled region (ComfyUI compiles the diffusion model only): the
    call's plan (evaluation, row chunks, cache entries per block, forecast coefficients), then the
    cache updates of compiled full computes, the NaN/inf fallback and the call's block counts."""
    def apply_model(executor, *args, **kwargs):
        x, t = args[0], args[1]
        opts = args[5] if len(args) > 5 else kwargs.get("transformer_options") or {}
        run = opts.get(key + "_run")
        if run is None:
            return executor(*args, **kwargs)
        dm = getattr(executor.class_obj, "diffusion_model", None)
        dm = getattr(dm, "_orig_mod", dm)  # torch.compile's OptimizedModule
        slots = run.slots_for(dm)
        sigma = float(t.flatten()[0])  # one host sync per call, not per block
        evaluation = run.evaluation(sigma)
        cond = {k: v for k, v in kwargs.items() if k != "transformer_options"}
        cond.update({"c_concat": args[2] if len(args) > 2 else None, "c_crossattn": args[3] if len(args) > 3 else None})
        resolution = resolution_key(opts, x, _shape_tensors(cond))
        outer_call = run.call
        run.call = call = run.prepare_call(slots, evaluation, x, opts, resolution)
        try:
            out = executor(*args, **kwargs)
            run.finish_call(call)
            if call.forecasted and not all_finite(out):
                run.fallbacks += 1
                logging.warning(f"{run.config.technique}: a forecast produced NaN/inf at sigma {sigma:.4f}; "
                                "recomputing this step in full")
                run.store.drop(opts.get("uuids") or [])
                run.call = call = run.prepare_call(slots, evaluation, x, opts, resolution, force_full=True)
                out = executor(*args, **kwargs)
                run.finish_call(call)
            run.note_ran(call)
            return out
        finally:
            run.call = outer_call
    return apply_model


def _make_diffusion_model(key):
    def diffusion_model(executor, *args, **kwargs):
        call_args = call_arguments(executor.class_obj, args, kwargs)
        opts = call_args.get("transformer_options") or {}
        run = opts.get(key + "_run")
        call = None if run is None else run.call
        if call is None:
            return executor(*args, **kwargs)
        slots = call.slots
        facts = slots.call_facts(call_args)
        refusal = slots.module_math_refusal(call_args, facts) if run.config.granularity == "module" else None
        if refusal and refusal not in run.block_granularity_reasons:
            run.block_granularity_reasons.add(refusal)
            logging.warning(f"{run.config.technique}: module granularity cannot follow {refusal}; "
                            "this run caches whole blocks (block granularity)")
        call.activate(facts, module_math=refusal is None)
        return executor(*args, **kwargs)
    return diffusion_model


def _make_block(key, kind, index):
    """The replacement of block (kind, index); the index is captured here (Wan sets no block_index)."""
    def block(args, extra):
        opts = args.get("transformer_options") or {}
        run = opts.get(key + "_run")
        call = run.call if run is not None else None
        if call is None or call.plans is None:  # not inside a call of ours (e.g. apply_model called directly)
            return extra["original_block"](args)
        return _run_block(run, call, call.plans[(kind, index)], args, extra, opts)
    return block


def _run_block(run, call, plan, args, extra, opts):
    names, streams = plan.names, plan.streams
    lead = args[streams[0]]
    compiling = is_compiling()
    shapes = tuple(tuple(args[s].shape[1:]) for s in streams)
    rows, entries, primary = call.block_entries(plan.key, shapes, lead.shape[0], opts, create=not compiling)
    if compiling and (not primary or (call.forecast and call.coefficients is None)):
        return extra["original_block"](args)  # uncached: sub-call entries cannot be handed back

    if (call.forecast and entries is not None
            and all(name in e for e in entries for name in names)):
        if compiling:
            preds = {name: _forecast_traced(run.forecaster, name, rows, entries, call.coefficients, lead)
                     for name in names}
        else:
            preds = {name: _forecast_slot(run.forecaster, name, rows, entries, call.position, lead)
                     for name in names}
        call.forecasted = True
        call.ran.append(FORECAST)
        if plan.module_slots is None:
            return {s: args[s] + preds[s] for s in streams}  # out of place: callers may hold the input
        return call.slots.run_forecast(plan.ref, args, preds, call.facts)

    if plan.module_slots is None:
        before = {s: args[s].clone() for s in streams}  # FLUX blocks add in place
        out = extra["original_block"](args)
        feats = {s: out[s] - before[s] for s in streams}
    else:
        out, feats = call.slots.run_full(plan.ref, args, call.facts)
    call.ran.append(FULL)
    if call.keep:
        if compiling:  # the cache bookkeeping runs after the compiled call (RunState.finish_call)
            for name in names:
                for i, r in enumerate(rows):
                    call.captured.append((plan.key, shapes, name, i, feats[name][r]))
        else:
            run.keep(call, plan.key, shapes, names, rows, entries, feats)
    return out


def _forecast_slot(forecaster, name, rows, entries, position, like):
    """One slot forecast for every cond chunk of the call, written into one batch tensor."""
    shape, dtype = forecaster.output_spec(entries[0][name])
    out = torch.empty((like.shape[0],) + tuple(shape[1:]), dtype=dtype, device=like.device)
    for r, e in zip(rows, entries):
        forecaster.predict(e[name], position, out[r])
    return out


def _forecast_traced(forecaster, name, rows, entries, coefficients, like):
    """The forecast inside a compiled region: coefficients are tensors computed outside it, so the
    graph does not depend on the step."""
    shape, dtype = forecaster.output_spec(entries[0][name])
    out = torch.empty((like.shape[0],) + tuple(shape[1:]), dtype=dtype, device=like.device)
    for r, e, c in zip(rows, entries, coefficients):
        forecaster.predict_with(e[name], c, out[r])
    return out


def install(model, config, key):
    """A clone of `model` (a ModelPatcher) with the feature cache `config` hooked in under `key`.

    Raises UnsupportedModelError (naming the supported families) for other models."""
    import comfy.patcher_extension as pe
    adapter = for_model(model, technique=config.technique)
    present = model.model_options.get("transformer_options", {})
    _refuse_easycache(config.technique, present)
    for other_key, other in feature_caches(present).items():
        if other_key != key:
            raise UnsupportedInputError(
                f"{config.technique} cannot be applied to a model that already has {other.technique}: both replace "
                "the transformer blocks. Apply one of them.")
        logging.warning(f"{config.technique}: this model already has {other.technique} ({other.describe()}); "
                        f"the new settings ({config.describe()}) replace it")
    m = model.clone()
    for wrapper_type, factory in ((pe.WrappersMP.OUTER_SAMPLE, _make_outer_sample),
                                  (pe.WrappersMP.CALC_COND_BATCH, _make_calc_cond_batch),
                                  (pe.WrappersMP.APPLY_MODEL, _make_apply_model),
                                  (pe.WrappersMP.DIFFUSION_MODEL, _make_diffusion_model)):
        m.remove_wrappers_with_key(wrapper_type, key)
        m.add_wrapper_with_key(wrapper_type, key, factory(key))
    if config.granularity == "module":
        slots = adapter.cache_slots(adapter)
        missing = [b.patch_key for b in adapter.blocks() if slots.module_slots(b) is None]
        if missing:
            logging.warning(f"{config.technique}: {len(missing)} blocks of this model are not of a known block "
                            f"interface (e.g. {missing[0]}); they use block granularity")
    replaced = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for ref in adapter.blocks():
        if ref.patch_key in replaced and not getattr(replaced[ref.patch_key], "_fastdit_key", None) == key:
            logging.warning(f"{config.technique}: replacing an existing patch of {ref.patch_key} from another node")
        fn = _make_block(key, ref.kind, ref.index)
        fn._fastdit_key = key
        m.set_model_patch_replace(fn, "dit", f"{ref.kind}_block", ref.index)
    # set after the patches: set_model_patch_replace rebuilds the transformer_options dict
    m.model_options.setdefault("transformer_options", {})[key] = config
    return m
