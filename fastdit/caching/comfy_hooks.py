"""ComfyUI glue of the feature caches: keyed wrappers and `patches_replace["dit"]` blocks.

    OUTER_SAMPLE     creates the run's state (and drops it in `finally`), logs one line per run
    CALC_COND_BATCH  marks a new model evaluation (builds the step plan from sample_sigmas)
    DIFFUSION_MODEL  sets up the call (family slots, per-call facts); if a call that used forecasts
                     returns NaN/inf, forgets those conds' caches and recomputes the call in full
    dit blocks       full compute -> run the block (or its re-expressed module math) and update the
                     slots; forecast -> predict each slot and apply it without attention or MLP

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
from .schedule import FORECAST
from .run import CallContext, RunState
from .store import chunk_rows


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
    def calc_cond_batch(executor, *args, **kwargs):
        model_options = args[-1] if args and isinstance(args[-1], dict) else kwargs.get("model_options", {})
        opts = model_options.get("transformer_options", {})
        run = opts.get(key + "_run")
        if run is not None:
            model, timestep = args[0], args[3] if len(args) > 3 else kwargs["timestep"]
            run.prepare_plan(opts.get("sample_sigmas"), getattr(model, "model_sampling", None))
            run.count_evaluation(run.evaluation(timestep.flatten()[0]))
        return executor(*args, **kwargs)
    return calc_cond_batch


def _make_diffusion_model(key):
    def diffusion_model(executor, *args, **kwargs):
        call = call_arguments(executor.class_obj, args, kwargs)
        opts = call.get("transformer_options") or {}
        run = opts.get(key + "_run")
        if run is None:
            return executor(*args, **kwargs)
        slots = run.slots_for(executor.class_obj)
        facts = slots.call_facts(call)
        refusal = slots.module_math_refusal(call, facts) if run.config.granularity == "module" else None
        if refusal and refusal not in run.block_granularity_reasons:
            run.block_granularity_reasons.add(refusal)
            logging.warning(f"{run.config.technique}: module granularity cannot follow {refusal}; "
                            "this run caches whole blocks (block granularity)")
        sigma = opts.get("sigmas")
        sigma = None if sigma is None else float(sigma.flatten()[0])  # one host sync per call, not per block
        evaluation = None if sigma is None else run.evaluation(sigma)
        outer_call = run.call
        run.call = CallContext(slots, evaluation, facts, module_math=refusal is None)
        try:
            out = executor(*args, **kwargs)
            if run.call.forecasted and not torch.isfinite(out).all():
                run.fallbacks += 1
                logging.warning(f"{run.config.technique}: a forecast produced NaN/inf at sigma {sigma:.4f}; "
                                "recomputing this step in full")
                run.store.drop(opts.get("uuids") or [])
                run.call = CallContext(slots, evaluation, facts, force_full=True, module_math=refusal is None)
                out = executor(*args, **kwargs)
            if run.call.stored:
                run.note_stored()
            return out
        finally:
            run.call = outer_call
    return diffusion_model


def _make_block(key, kind, index):
    """The replacement of block (kind, index); the index is captured here (Wan sets no block_index)."""
    def block(args, extra):
        opts = args.get("transformer_options") or {}
        run = opts.get(key + "_run")
        call = run.call if run is not None else None
        if call is None:  # not inside a run of ours (e.g. apply_model called directly)
            return extra["original_block"](args)
        return _run_block(run, call, kind, index, args, extra, opts)
    return block


def _run_block(run, call, kind, index, args, extra, opts):
    config, slots = run.config, call.slots
    ref = run.block_ref(slots.adapter, kind, index)
    streams = slots.streams(ref)
    module_slots = slots.module_slots(ref) if config.granularity == "module" and call.module_math else None
    if config.granularity == "module" and call.module_math and module_slots is None:
        run.fallback_blocks.add(ref.patch_key)
    names = module_slots or streams  # block granularity: one slot per stream (its output delta)
    lead = args[streams[0]]
    chunks = chunk_rows(lead.shape[0], list(opts.get("uuids") or []))
    # one cache per resolution and per context window (windows of one length share shapes)
    resolution = (tuple(tuple(args[s].shape[1:]) for s in streams), window_key(opts))
    entries = [run.store.entry(u, ref.patch_key, resolution) for u, _ in chunks]
    ev = call.evaluation

    if (ev is not None and ev.mode == FORECAST and not call.force_full and not run.compute_only
            and all(name in e for e in entries for name in names)):
        preds = {name: _forecast_slot(run.forecaster, name, chunks, entries, ev.position, lead) for name in names}
        call.forecasted = True
        run.block_calls["forecast"] += 1
        if module_slots is None:
            return {s: args[s] + preds[s] for s in streams}  # out of place: callers may hold the input
        return slots.run_forecast(ref, args, preds, call.facts)

    if module_slots is None:
        before = {s: args[s].clone() for s in streams}  # FLUX blocks add in place
        out = extra["original_block"](args)
        feats = {s: out[s] - before[s] for s in streams}
    else:
        out, feats = slots.run_full(ref, args, call.facts)
    run.block_calls["full"] += 1
    if run.observer is not None:
        for name in names:
            for uuid, rows in chunks:
                run.observer(name, ref.patch_key, uuid, feats[name][rows], ev)
    if ev is not None and not run.compute_only and run.plan.forecasts_after(ev.step):
        device = "cpu" if config.cache_device == "cpu" else None
        forecaster = run.forecaster
        for name in names:
            for (_, rows), e in zip(chunks, entries):  # fresh tensors: stored without a copy
                e[name] = forecaster.update(e.get(name), feats[name][rows], ev.position, (ref.patch_key, name),
                                            device, owned=True)
        call.stored = True
    return out


def _forecast_slot(forecaster, name, chunks, entries, position, like):
    """One slot forecast for every cond chunk of the call, written into one batch tensor."""
    shape, dtype = forecaster.output_spec(entries[0][name])
    out = torch.empty((like.shape[0],) + tuple(shape[1:]), dtype=dtype, device=like.device)
    for (_, rows), e in zip(chunks, entries):
        forecaster.predict(e[name], position, out[rows])
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
