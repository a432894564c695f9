"""SpecEdit on demo-kontext edits: cost, wall clock, fidelity to the baseline edit and edit success.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.specedit --edits 16 --size 32 --steps 30 \
        --configs specedit specedit:preset=quality specedit:preset=fast

Every edit (bench_models.edit_cases) runs every row from the same seed's noise; the row order
rotates per edit. Per row: FLOPs ratio against the baseline (counted as executed, metrics.FlopCounter),
wall-clock ratio, PSNR of the decoded image against the baseline edit over the whole image and over
the refined region (the latent pixels the first SpecEdit row refined, per edit; the same region for
every row) and over its blended boundary ring (the refined cells next to locked ones, where
the source is blended in), scene / shape accuracy of the edited scene, PSNR of the pixels the edit must leave
alone against the source, and the share of cells refined. With `--matched` (default) plain Euler
runs at the step count whose cost matches each SpecEdit row's on the first edit. The table so far
is rewritten after every edit (OUT/table.md, OUT/results.json).
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pixels_mask(latent_mask, image_hw):
    import torch.nn.functional as F
    return F.interpolate(latent_mask.float()[:, None], size=image_hw, mode="nearest")[:, 0]


def run(edits=16, size=32, steps=30, cfg=3.0, specs=("specedit",), matched=True, log=print, seed=0, out=None):
    import torch

    from bench import configs as registry
    from bench import models
    from bench.configs.core import matched_euler_steps
    from fastdit import metrics
    bm = models.load("demo-kontext")
    jobs = bm.jobs(edits, [seed], size, size)
    counter = metrics.FlopCounter(bm.model)
    rows = {}

    def add(spec):
        c = registry.build(spec)
        if hasattr(c, "vae"):
            c.vae = bm.vae
        rows[c.name] = {"config": c, "model": counter.install(c.prepare(bm.model)), "flops": [], "seconds": [],
                        "images": [], "refined": [], "ring": [], "accuracy": [], "shape": []}
        return c.name

    names = [add(s) for s in ["baseline", *specs]]
    first_specedit = next((n for n in names if n.startswith("specedit")), None)
    for n in names:   # warm-up (allocations, kernel choices) outside the timings
        rows[n]["config"].sample(rows[n]["model"], torch.zeros_like(jobs[0].latent), jobs[0].positive,
                                 jobs[0].negative, jobs[0].latent, 2, cfg, 0)

    def run_one(j, job, selected):
        import comfy.sample
        noise = comfy.sample.prepare_noise(job.latent, job.seed)
        for n in [selected[(k + j) % len(selected)] for k in range(len(selected))]:
            r = rows[n]
            counter.reset()
            t0 = time.perf_counter()
            with torch.no_grad():
                lat = r["config"].sample(r["model"], noise, job.positive, job.negative, job.latent, steps, cfg, job.seed)
            r["seconds"].append(time.perf_counter() - t0)
            r["flops"].append(counter.flops)
            r["images"].append(bm.decode(lat)[:1].float().cpu())
            r["refined"].append(getattr(r["config"], "last_refined", None))
            r["ring"].append(getattr(r["config"], "last_ring", None))

    for j, job in enumerate(jobs):
        run_one(j, job, list(names))
        if j == 0 and matched:   # matched-cost Euler: the step count whose cost matches each row's on edit 1
            extra = []
            for n in list(names):
                if n.startswith("specedit"):
                    m = f"euler:steps={matched_euler_steps(steps, rows['baseline']['flops'][0] / rows[n]['flops'][0])}"
                    if m not in rows and m not in extra:
                        extra.append(add(m))
            run_one(0, job, extra)
            names += extra
        log(f"  edit {j + 1}/{len(jobs)}: " + ", ".join(f"{n} {rows[n]['seconds'][-1]:.1f}s" for n in names))
        if out:   # the table so far, in case the run is cut short
            _write(out, summarize(bm, jobs[:j + 1], rows, names, first_specedit, steps, cfg, size))
    return summarize(bm, jobs, rows, names, first_specedit, steps, cfg, size)


def _write(out, results):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(format_table(results) + "\n")


def summarize(bm, jobs, rows, names, region_row, steps, cfg, size):
    import torch

    from fastdit import metrics
    base = rows["baseline"]
    ref = torch.cat(base["images"][:len(jobs)])
    hw = ref.shape[1:3]
    region = torch.cat([_pixels_mask(m, hw) for m in rows[region_row]["refined"][:len(jobs)]]) if region_row else None
    ring = torch.cat([_pixels_mask(m, hw) for m in rows[region_row]["ring"][:len(jobs)]]) if region_row else None
    out = []
    for n in names:
        r = rows[n]
        imgs = torch.cat(r["images"][:len(jobs)])
        scores = [job.score(img[None]) for job, img in zip(jobs, imgs)]
        unedited = torch.cat([metrics.psnr(img[None], job.source, mask=job.unedited_mask) for job, img in zip(jobs, imgs)])
        k = len(jobs)
        row = {"config": n, "cost_ratio": sum(base["flops"][:k]) / sum(r["flops"][:k]),
               "wall_ratio": sum(base["seconds"][:k]) / sum(r["seconds"][:k]), "seconds": sum(r["seconds"][:k]) / k,
               "psnr": metrics.pooled_psnr(metrics.psnr(imgs, ref)),
               "psnr_refined": metrics.pooled_psnr(metrics.psnr(imgs, ref, mask=region)) if region is not None else None,
               "psnr_ring": metrics.pooled_psnr(metrics.psnr(imgs, ref, mask=ring))
               if ring is not None and bool(ring.any()) else None,
               "scene_accuracy": sum(s["scene_accuracy"] for s in scores) / len(scores),
               "shape_accuracy": sum(s["shape_accuracy"] for s in scores) / len(scores),
               "unedited_psnr": metrics.pooled_psnr(unedited),
               "psnr_per_edit": [float(v) for v in metrics.psnr(imgs, ref)],
               "scene_per_edit": [s["scene_accuracy"] for s in scores]}
        finite = sorted(v for v in row["psnr_per_edit"])
        row["psnr_median"] = finite[len(finite) // 2] if finite else None
        refined = [m for m in r["refined"][:len(jobs)] if m is not None]
        if refined:
            row["refined_share"] = float(torch.cat(refined).float().mean())
        out.append(row)
    return {"model": "demo-kontext", "latent": size, "steps": steps, "cfg": cfg, "edits": len(jobs),
            "region_row": region_row, "rows": out}


def format_table(results):
    head = ("| config | cost ratio | wall ratio | s/edit | PSNR vs baseline dB | refined region dB | blend ring dB | "
            "scene acc. | shape acc. | unedited vs source dB | cells refined |")
    lines = [head, "|" + "---|" * 11]
    for r in results["rows"]:
        f = lambda v, spec: "-" if v is None else ("inf" if v == float("inf") else format(v, spec))  # noqa: E731
        lines.append(f"| {r['config']} | {f(r['cost_ratio'], '.2f')}x | {f(r['wall_ratio'], '.2f')}x | "
                     f"{f(r['seconds'], '.1f')} | {f(r['psnr'], '.2f')} | {f(r['psnr_refined'], '.2f')} | "
                     f"{f(r.get('psnr_ring'), '.2f')} | "
                     f"{f(r['scene_accuracy'], '.3f')} | {f(r['shape_accuracy'], '.3f')} | {f(r['unedited_psnr'], '.2f')} | "
                     f"{f(r.get('refined_share'), '.3f')} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=16)
    ap.add_argument("--size", type=int, default=32, help="latent side (image = 2x)")
    ap.add_argument("--steps", type=int, default=30, help="baseline steps (euler / simple)")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--configs", nargs="+", default=["specedit"], help="rows besides the baseline (bench/configs)")
    ap.add_argument("--no-matched", dest="matched", action="store_false")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "specedit"))
    args = ap.parse_args(argv)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from fastdit.testing import comfy_env
    comfy_env.boot(load_pack=False)
    import torch
    torch.set_num_threads(args.threads)
    results = run(args.edits, args.size, args.steps, args.cfg, args.configs, args.matched, out=args.out)
    _write(args.out, results)
    print(f"demo-kontext, {args.size}x{args.size} latent, {args.edits} edits, baseline {args.steps} steps, cfg {args.cfg}")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
