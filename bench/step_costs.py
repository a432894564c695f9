"""Where a cached run's time goes: CPU time per step, split into full steps and forecast steps,
beside the model's own per-step work outside its transformer blocks.

    OMP_NUM_THREADS=1 python -m bench.step_costs --model demo-flux --size 64 --steps 50 --threads 1 \\
        --configs hicache svdcache

For each configuration the run's steps are told apart by the FLOPs they executed (counted by
fastdit.metrics.FlopCounter): a step that counted at least half of a baseline step's FLOPs computed
its blocks (full), the others forecast. "outside the blocks" is the baseline model with every block
replaced by one that returns its input: what a step costs that runs no block at all (embedders,
position tables, the final layer, ComfyUI's sampling and CFG), the floor of a forecast step. Times
are this process's CPU time (with one thread, what an idle machine's wall clock would read); each
configuration runs `--reps` times and the fastest run is kept. Only configurations whose `sample`
takes ComfyUI's per-step callback can be timed per step (the model patchers: baseline, easycache,
hicache, svdcache).
"""
import argparse
import inspect
import statistics
import sys
import time


def identity_blocks(model):
    """A clone of `model` whose every transformer block returns its input streams unchanged."""
    from fastdit.adapters import for_model
    adapter = for_model(model, technique="bench.step_costs")
    slots = adapter.cache_slots(adapter)
    m = model.clone()
    for ref in adapter.blocks():
        streams = tuple(slots.streams(ref))
        m.set_model_patch_replace(lambda args, extra, streams=streams: {s: args[s] for s in streams},
                                  "dit", f"{ref.kind}_block", ref.index)
    return m


def timed_steps(config, model, job, steps, cfg, counter):
    """[(CPU seconds, FLOPs)] of each step of one sampling run."""
    import torch

    from bench.fidelity import _prepare_noise
    noise = _prepare_noise(job.latent, job.seed)
    marks = []
    counter.reset()
    marks.append((time.process_time(), 0))
    callback = lambda *_: marks.append((time.process_time(), counter.flops))  # noqa: E731
    with torch.no_grad():
        config.sample(model, noise, job.positive, job.negative, job.latent, steps, cfg, job.seed, callback=callback)
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


def summarize(name, per_step, full_flops):
    """Per-run totals and the mean of full and forecast steps (a step is full when it executed at
    least half of `full_flops`)."""
    full = [s for s, f in per_step if f >= full_flops / 2]
    other = [s for s, f in per_step if f < full_flops / 2]
    mean = lambda xs: statistics.fmean(xs) if xs else None  # noqa: E731
    return {"config": name, "seconds": sum(s for s, _ in per_step), "steps": len(per_step),
            "full_steps": len(full), "full_ms": _ms(mean(full)), "forecast_steps": len(other),
            "forecast_ms": _ms(mean(other)), "forecast_median_ms": _ms(statistics.median(other) if other else None)}


def _ms(seconds):
    return None if seconds is None else 1e3 * seconds


def run(model_spec, config_specs, steps=50, size=(64, 64), reps=2, cfg=None, log=print):
    """Measure every configuration on the model's first job; returns the rows (baseline first, then
    "outside the blocks", then each configuration)."""
    from bench import configs as registry
    from bench import models
    from fastdit import metrics
    bm = models.load(model_spec)
    cfg = bm.default_cfg if cfg is None else cfg
    job = bm.jobs(1, [0], *size)[0]
    specs = ["baseline"] + [s for s in config_specs if s != "baseline"]
    configs = [registry.build(s) for s in specs]
    for c in configs:
        if "callback" not in inspect.signature(c.sample).parameters:
            raise ValueError(f"{c.name}: this configuration's sampler takes no per-step callback, so its steps "
                             "cannot be timed; step_costs times the model patchers (baseline, easycache, hicache, "
                             "svdcache)")
    counter = metrics.FlopCounter(bm.model)
    floor = ("outside the blocks", configs[0], counter.install(identity_blocks(bm.model)))
    rows = [(c.name, c, counter.install(c.prepare(bm.model))) for c in configs]
    rows.insert(1, floor)
    for _, c, m in rows:  # first calls allocate and select kernels
        timed_steps(c, m, job, 2, cfg, counter)
    best = {}
    for _ in range(reps):
        for name, c, m in rows:
            per_step = timed_steps(c, m, job, steps, cfg, counter)
            if name not in best or sum(s for s, _ in per_step) < sum(s for s, _ in best[name]):
                best[name] = per_step
    full_flops = max(f for _, f in best["baseline"])
    out = [summarize(name, best[name], full_flops) for name, _, _ in rows]
    log(format_table(out, bm, steps, size))
    return out


def format_table(rows, bm, steps, size):
    base = rows[0]["seconds"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    w = max(len(r["config"]) for r in rows)
    lines = [f"{bm.name}: {size[0]}x{size[1]} latent, {steps} steps, one job, CPU time (fastest of the runs)",
             f"{'config':<{w}} {'s/run':>7} {'x':>6} {'full steps':>11} {'ms/full':>8} {'forecast steps':>15} "
             f"{'ms/forecast':>12} {'median':>7}"]
    for r in rows:
        lines.append(f"{r['config']:<{w}} {r['seconds']:>7.2f} {base / r['seconds']:>6.2f} {r['full_steps']:>11} "
                     f"{fmt(r['full_ms']):>8} {r['forecast_steps']:>15} {fmt(r['forecast_ms']):>12} "
                     f"{fmt(r['forecast_median_ms']):>7}")
    return "\n".join(lines)


def main(argv=None):
    from bench.fidelity import _boot, parse_size
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-flux")
    ap.add_argument("--configs", nargs="+", default=["hicache"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=parse_size, default=(64, 64))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--cfg", type=float, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    _boot()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.model, args.configs, steps=args.steps, size=args.size, reps=args.reps, cfg=args.cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
