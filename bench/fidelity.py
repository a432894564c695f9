"""Fidelity and speed of accelerated configurations against the baseline, in one process.

    python -m bench.fidelity --model tiny-flux --configs baseline easycache --steps 50 --size 64 \
        --prompts 4 --seeds 0 --out out/bench

For every (prompt, seed) job every configuration samples from the same noise; the order of the
configurations rotates from job to job so that clock drift cancels. Reported per configuration:
model FLOPs per image and the FLOPs speed-up (counted by fastdit.metrics.FlopCounter), seconds per
image and the wall-clock speed-up, PSNR / SSIM of the decoded image against the baseline's (same
seed), the model's own score where it has one (scene accuracy for the demo models; for
demo-flux-open also detail_db, the image's fine-band energy against renders of its prompt: 0 dB is
the world's detail, negative is blur) and, for edits,
the PSNR of the region the edit must leave alone against the source image.
With matched costs on (the command line's default), every technique row is also compared with plain
Euler at the step count nearest to baseline steps / its FLOPs speed-up (`euler:steps=N`, run on the
same jobs after the others): the row's "matched Euler" column gives that run's PSNR, so a technique
is read against what simply taking fewer steps gives at the same cost.
`--clock cpu` times each image by the process's CPU time instead of elapsed time: with `--threads 1`
on a machine shared with other jobs, that is the time the run would take on an idle machine.
Writes OUT/results.json and OUT/grid.png (rows: jobs, columns: configurations).
"""
import argparse
import json
import math
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _boot():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from fastdit.testing import comfy_env
    comfy_env.boot(load_pack=False)


def _machine():
    import torch
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads" if not torch.cuda.is_available() \
        else torch.cuda.get_device_name(0)


def _prepare_noise(latent, seed):
    import comfy.sample
    return comfy.sample.prepare_noise(latent, seed)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def run(model_spec, config_specs, steps=50, size=(64, 64), n_prompts=2, seeds=(0,), cfg=None, out=None,
        warmup=True, log=print, matched=False, clock="wall"):
    """Run the bench in this process (ComfyUI must be booted) and return the results dict.

    matched: also run plain Euler at each technique's matched cost (see the module docstring).
    clock: "wall" (elapsed time) or "cpu" (this process's CPU time: on a machine shared with other
    jobs, a one-thread run's CPU time is what its wall clock would be on an idle machine)."""
    import torch

    from bench import configs as registry
    from bench import models
    from fastdit import metrics

    specs = list(config_specs)
    if "baseline" not in [registry.parse_spec(s)[0] for s in specs]:
        specs.insert(0, "baseline")
    configs = [registry.build(s) for s in specs]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"two configurations have the same label: {names}")
    base_index = next(i for i, s in enumerate(specs) if registry.parse_spec(s)[0] == "baseline")

    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(sorted(CLOCKS))}, not {clock!r}")
    timer = CLOCKS[clock]
    bm = models.load(model_spec)
    cfg = bm.default_cfg if cfg is None else cfg
    height, width = size
    jobs = bm.jobs(n_prompts, list(seeds), height, width)
    counter = metrics.FlopCounter(bm.model)
    prepared = [counter.install(c.prepare(bm.model)) for c in configs]

    def sample(i, job, n_steps):
        noise = _prepare_noise(job.latent, job.seed)
        counter.reset()
        t0 = timer()
        with torch.no_grad():  # as ComfyUI's executor runs nodes
            lat = configs[i].sample(prepared[i], noise, job.positive, job.negative, job.latent, n_steps, cfg, job.seed)
        return lat, timer() - t0, counter.flops

    if warmup:  # first calls allocate and select kernels; keep them out of the timings
        for i in range(len(configs)):
            sample(i, jobs[0], 2)

    rows = [{"flops": [], "seconds": [], "images": []} for _ in configs]

    def run_jobs(indices):
        for j, job in enumerate(jobs):
            order = [indices[(k + j) % len(indices)] for k in range(len(indices))]
            for i in order:
                lat, secs, flops = sample(i, job, steps)
                rows[i]["flops"].append(flops)
                rows[i]["seconds"].append(secs)
                rows[i]["images"].append(bm.decode(lat)[:1].float().cpu())
            log(f"  job {j + 1}/{len(jobs)} ({job.label}, seed {job.seed}): "
                + ", ".join(f"{names[i]} {rows[i]['seconds'][-1]:.1f}s" for i in indices))

    run_jobs(list(range(len(configs))))
    matches = {}
    if matched:
        matches = _matched_euler(configs, rows, base_index, steps, registry)
        extra = [registry.build(f"euler:steps={n}") for n in sorted(set(matches.values()))
                 if f"euler:steps={n}" not in names]
        if extra:
            configs += extra
            names += [c.name for c in extra]
            prepared += [counter.install(c.prepare(bm.model)) for c in extra]
            rows += [{"flops": [], "seconds": [], "images": []} for _ in extra]
            log(f"  matched-cost Euler runs: {', '.join(c.name for c in extra)}")
            run_jobs(list(range(len(configs) - len(extra), len(configs))))

    results = _summarize(bm, configs, jobs, rows, base_index, steps, cfg, height, width, counter)
    results["clock"] = clock
    by_name = {r["config"]: r for r in results["rows"]}
    for name, n in matches.items():
        euler_row = by_name[f"euler:steps={n}"]
        by_name[name]["matched_euler"] = {"config": euler_row["config"], "psnr": euler_row["psnr"],
                                          "ssim": euler_row["ssim"], "flops_speedup": euler_row["flops_speedup"]}
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        write_grid(os.path.join(out, "grid.png"), [r["images"] for r in rows], names, [j.label for j in jobs])
    log(format_table(results))
    return results


def _matched_euler(configs, rows, base_index, steps, registry):
    """{technique row name: matched Euler steps} for every row that is neither the baseline nor an
    Euler row (their FLOPs are known after the first pass)."""
    from bench.configs.core import matched_euler_steps
    base = sum(rows[base_index]["flops"])
    out = {}
    for i, c in enumerate(configs):
        kind = registry.parse_spec(c.name)[0]
        if i == base_index or kind in ("baseline", "euler") or not sum(rows[i]["flops"]):
            continue
        out[c.name] = matched_euler_steps(steps, base / sum(rows[i]["flops"]))
    return out


def _finite(x):
    return None if x is None else (x if math.isfinite(x) else "inf")


def _summarize(bm, configs, jobs, rows, base_index, steps, cfg, height, width, counter):
    import torch

    from fastdit import metrics
    base = rows[base_index]
    base_flops = sum(base["flops"]) / len(jobs)
    base_secs = sum(base["seconds"]) / len(jobs)
    out_rows = []
    for c, r in zip(configs, rows):
        imgs = torch.cat(r["images"])
        ref = torch.cat(base["images"])
        psnr = metrics.psnr(imgs, ref)
        ssim = metrics.ssim(imgs, ref)
        flops = sum(r["flops"]) / len(jobs)
        secs = sum(r["seconds"]) / len(jobs)
        row = {"config": c.name, "flops_per_image": flops, "cost_ratio": flops / base_flops,
               "flops_speedup": base_flops / flops if flops else None,
               "seconds_per_image": secs, "wall_ratio": secs / base_secs, "wall_speedup": base_secs / secs,
               "psnr": _finite(metrics.pooled_psnr(psnr)), "ssim": float(ssim.mean()),
               "psnr_per_image": [_finite(float(p)) for p in psnr], "ssim_per_image": [float(s) for s in ssim]}
        scores = [job.score(img[None]) for job, img in zip(jobs, imgs) if job.score is not None]
        for key in (scores[0] if scores else {}):
            row[key] = sum(s[key] for s in scores) / len(scores)
        edits = [(img, job) for job, img in zip(jobs, imgs) if job.source is not None]
        if edits:
            unedited = torch.cat([metrics.psnr(img[None], job.source, mask=job.unedited_mask) for img, job in edits])
            row["unedited_psnr"] = _finite(metrics.pooled_psnr(unedited))
        out_rows.append(row)
    return {"model": bm.name, "latent": [height, width],
            "image_tokens": counter.adapter.token_grid_size(tuple(jobs[0].latent.shape)),
            "steps": steps, "cfg": cfg, "jobs": [{"label": j.label, "seed": j.seed} for j in jobs],
            "machine": _machine(), "rows": out_rows}


def _fmt(v, spec):
    if v is None:
        return "-"
    if v == "inf":
        return "inf"
    return format(v, spec)


def format_table(results):
    extra = [k for k in ("scene_accuracy", "shape_accuracy", "detail_db", "unedited_psnr") if k in results["rows"][0]]
    matched = any("matched_euler" in r for r in results["rows"])
    head = ["config", "GFLOPs/img", "FLOPs x", "s/img", "wall x", "PSNR dB", "SSIM"] + extra \
        + (["matched Euler: PSNR dB"] if matched else [])
    lines = [[r["config"], _fmt(r["flops_per_image"] / 1e9, ".1f"), _fmt(r["flops_speedup"], ".2f"),
              _fmt(r["seconds_per_image"], ".2f"), _fmt(r["wall_speedup"], ".2f"), _fmt(r["psnr"], ".2f"),
              _fmt(r["ssim"], ".4f")] + [_fmt(r[k], ".2f" if k in ("unedited_psnr", "detail_db") else ".3f") for k in extra]
             + ([_matched_cell(r.get("matched_euler"))] if matched else [])
             for r in results["rows"]]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    h, w = results["latent"]
    clock = " (seconds: process CPU time)" if results.get("clock") == "cpu" else ""
    title = (f"{results['model']}: {h}x{w} latent ({results['image_tokens']} image tokens), {results['steps']} steps, "
             f"cfg {results['cfg']}, {len(results['jobs'])} image(s) per config, {results['machine']}{clock}")
    return "\n".join([title, fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def _matched_cell(m):
    if m is None:
        return "-"
    return f"{m['config'].partition('=')[2]} steps: {_fmt(m['psnr'], '.2f')}"


def write_grid(path, columns, names, row_labels, min_cell=96):
    """PNG grid: one column per configuration, one row per job, labels on top and left."""
    import numpy as np
    from PIL import Image, ImageDraw
    h, w = columns[0][0].shape[1:3]
    scale = max(1, math.ceil(min_cell / max(h, w)))
    ch, cw = h * scale, w * scale
    top, left, pad = 16, 0, 2
    grid = Image.new("RGB", (left + len(columns) * (cw + pad), top + len(row_labels) * (ch + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for c, (name, images) in enumerate(zip(names, columns)):
        x = left + c * (cw + pad)
        draw.text((x + 2, 2), name[: max(4, cw // 6)], fill="black")
        for r, img in enumerate(images):
            arr = (img[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            grid.paste(Image.fromarray(arr).resize((cw, ch), Image.NEAREST), (x, top + r * (ch + pad)))
    grid.save(path)


def parse_size(text):
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-flux", help="tiny-<family>, demo-flux, demo-kontext or a checkpoint path")
    ap.add_argument("--configs", nargs="+", default=["baseline", "easycache"],
                    help="configuration specs: name or name:key=value,... (baseline is added if missing)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=parse_size, default=(64, 64), help="latent size HxW or N (default 64)")
    ap.add_argument("--prompts", type=int, default=2, help="number of prompts")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--cfg", type=float, default=None, help="CFG scale (default: the model's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "bench"))
    ap.add_argument("--no-matched", dest="matched", action="store_false",
                    help="skip the plain-Euler runs at each technique's matched cost")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="time per image: elapsed (wall) or this process's CPU time (cpu: for a machine shared "
                         "with other jobs, with --threads 1)")
    ap.add_argument("--list", action="store_true", help="list the available configurations and exit")
    args = ap.parse_args(argv)
    _boot()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench import configs as registry
    if args.list:
        print("configurations:", ", ".join(registry.available()))
        for mod, err in registry.IMPORT_ERRORS.items():
            print(f"  bench/configs/{mod}.py failed to import: {err}")
        return 0
    run(args.model, args.configs, steps=args.steps, size=args.size, n_prompts=args.prompts, seeds=args.seeds,
        cfg=args.cfg, out=args.out, matched=args.matched, clock=args.clock)
    print(f"wrote {os.path.relpath(args.out)}/results.json and grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
