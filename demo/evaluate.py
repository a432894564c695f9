"""Score a demo model on fixed prompts, sampled through ComfyUI's KSampler path, and draw a grid.

    python -m demo.evaluate --model demo-flux --prompts 64 --sizes 16 32 64 --steps 30 \
        --grid docs/images/demo_flux_samples.png

demo-flux: scene accuracy (objects with colour-mask IoU >= 0.5) and shape accuracy (template match)
of samples from pure noise, per latent size. demo-kontext: the same on the edited scene, plus the
PSNR of the pixels the edit must leave alone against the source. The grid shows, per prompt, the
sample next to the exact render of its prompt (for edits: source, sample, exact edit).

demo-flux-open (the open world, demo/open_world.py): scene and shape accuracy on the prompted
attributes, and detail_db, the energy of the samples in the three finest spatial-frequency bands
against 4 renders of each prompt (0 dB: the world's detail; negative: blur), per size and per step
count (`--steps` takes several; each row also gives the PSNR against the samples of the most steps, and
the samples of the most steps are scored once more blurred by a Gaussian of 1 pixel);
`--two-seeds` adds the PSNR between the samples of seeds `seed` and `seed + 1` of each prompt.
The same numbers for the renders (one seed against others, and blurred by a Gaussian of 1 pixel)
are printed first as the yardstick:

    python -m demo.evaluate --model demo-flux-open --prompts 32 --sizes 32 --steps 50 18 10 5 --two-seeds
"""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _conds(demo, prompts, refs=None):
    pos = [demo.conditioning(p)[0] for p in prompts]
    ctx = torch.cat([c for c, _ in pos])
    pooled = torch.cat([e["pooled_output"] for _, e in pos])
    neg_ctx, neg_extras = demo.conditioning("")[0]
    positive = [[ctx, {"pooled_output": pooled}]]
    negative = [[neg_ctx.expand(len(prompts), -1, -1).clone(),
                 {"pooled_output": neg_extras["pooled_output"].expand(len(prompts), -1).clone()}]]
    if refs is not None:
        positive[0][1]["reference_latents"] = [refs]
        negative[0][1]["reference_latents"] = [refs]
    return positive, negative


def sample_images(demo, prompts, size, steps, cfg, seed, refs=None, batch=16):
    """Decoded samples [N, 2*size, 2*size, 3] for prompts, `batch` at a time."""
    import comfy.sample
    from . import models
    patcher, vae = demo.patcher(), models.vae()
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        r = refs[i:i + batch] if refs is not None else None
        positive, negative = _conds(demo, chunk, r)
        latent = torch.zeros(len(chunk), 16, size, size)
        noise = comfy.sample.prepare_noise(latent, seed + i)
        with torch.no_grad():
            lat = comfy.sample.sample(patcher, noise, steps, cfg, "euler", "simple", positive, negative, latent,
                                      disable_pbar=True, seed=seed + i)
        out.append(vae.decode(lat))
    return torch.cat(out)


def task_of(demo, name):
    """"flux" or "kontext": from the model's name, else from the weights' metadata or file name."""
    if name in ("demo-flux", "demo-kontext"):
        return name[len("demo-"):]
    if name == "demo-flux-open" or demo.metadata.get("world") == "open":
        return "open"
    return demo.metadata.get("task") or ("kontext" if "kontext" in os.path.basename(name) else "flux")


def evaluate(name, n_prompts, sizes, steps, cfg, seed=0, grid=None, grid_size=None, grid_count=12):
    """Scores per latent size for a demo model (name or weights path); optionally a sample grid."""
    from . import bench_models, models, world
    demo = models.load(name)
    task = task_of(demo, name)
    rows = []
    grid_parts = None
    for size in sizes:
        h = 2 * size
        if task == "flux":
            prompts = world.benchmark_prompts(n_prompts)
            scenes = [world.parse(p) for p in prompts]
            imgs = sample_images(demo, prompts, size, steps, cfg, seed)
            row = {"size": size, "scene_accuracy": world.scene_accuracy(imgs, scenes),
                   "shape_accuracy": world.shape_accuracy(imgs, scenes)}
            columns = [imgs, world.render(scenes, h, h)]
        else:
            from fastdit import metrics
            cases = bench_models.edit_cases(n_prompts)
            sources = world.render([s for s, _ in cases], h, h)
            targets = [e.apply(s) for s, e in cases]
            vae = models.vae()
            imgs = sample_images(demo, [e.prompt() for _, e in cases], size, steps, cfg, seed,
                                 refs=vae.encode(sources))
            masks = torch.stack([world.unedited_mask(s, t, h, h) for (s, _), t in zip(cases, targets)])
            row = {"size": size, "scene_accuracy": world.scene_accuracy(imgs, targets),
                   "shape_accuracy": world.shape_accuracy(imgs, targets),
                   "unedited_psnr": metrics.pooled_psnr(metrics.psnr(imgs, sources, mask=masks))}
            columns = [sources, imgs, world.render(targets, h, h)]
        rows.append(row)
        print("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
              flush=True)
        if size == (grid_size or sizes[-1]):
            grid_parts = [c[:grid_count] for c in columns]
    if grid and grid_parts is not None:
        write_pairs_grid(grid, grid_parts)
    return rows


def _detail(images, refs):
    """detail_db and the per-band figures of images against reference renders."""
    from . import open_world
    return {"detail_db": open_world.detail_db(images, refs),
            "bands_db": [round(float(x), 2) for x in open_world.band_db(images, refs)]}


def reference_renders(prompts, size):
    """The reference images of the open-world scores: 4 renders (seeds 100-103) of each prompt."""
    from . import open_world
    return torch.cat([open_world.renders_of(p, 2 * size, 2 * size, range(100, 104)) for p in prompts])


def open_yardstick(n_prompts, size, seed=0, refs=None):
    """Scores of renders of the open world (seed `seed` against the reference renders), plain and blurred."""
    from . import open_world
    from fastdit import metrics
    h = 2 * size
    prompts = open_world.benchmark_prompts(n_prompts)
    refs = reference_renders(prompts, size) if refs is None else refs
    a = torch.cat([open_world.renders_of(p, h, h, [seed]) for p in prompts])
    b = torch.cat([open_world.renders_of(p, h, h, [seed + 1]) for p in prompts])
    rows = []
    for label, imgs in (("renders", a), ("renders, 1 px blur", open_world.gaussian_blur(a, 1.0)),
                        ("average of 2 renders", (a + b) / 2)):
        rows.append({"size": size, "images": label, "scene_accuracy": open_world.scene_accuracy(imgs, prompts),
                     **_detail(imgs, refs)})
    rows[0]["two_seed_psnr"] = metrics.pooled_psnr(metrics.psnr(a, b))
    return rows


def evaluate_open(demo, n_prompts, sizes, steps_list, cfg, seed=0, two_seeds=False, grid=None, grid_count=12):
    """Rows per (size, steps) for a model of the open world; optionally a grid (samples | a render)."""
    from . import open_world
    from fastdit import metrics
    rows = []
    prompts = open_world.benchmark_prompts(n_prompts)
    for size in sizes:
        h = 2 * size
        refs = reference_renders(prompts, size)
        for row in open_yardstick(n_prompts, size, seed, refs):
            rows.append(row)
            print("  " + _fmt_row(row), flush=True)
        samples = {}
        for steps in sorted(steps_list, reverse=True):
            imgs = sample_images(demo, prompts, size, steps, cfg, seed)
            samples[steps] = imgs
            row = {"size": size, "steps": steps, "scene_accuracy": open_world.scene_accuracy(imgs, prompts),
                   "shape_accuracy": open_world.shape_accuracy(imgs, prompts),
                   **_detail(imgs, refs),
                   "psnr_vs_most_steps": metrics.pooled_psnr(metrics.psnr(imgs, samples[max(steps_list)]))}
            if two_seeds and steps == max(steps_list):
                other = sample_images(demo, prompts, size, steps, cfg, seed + 1)
                row["two_seed_psnr"] = metrics.pooled_psnr(metrics.psnr(imgs, other))
            rows.append(row)
            print("  " + _fmt_row(row), flush=True)
            if steps == max(steps_list):  # the yardstick on the model's own images: its samples, blurred
                blurred = open_world.gaussian_blur(imgs, 1.0)
                row = {"size": size, "steps": steps, "images": "1 px blur", **_detail(blurred, refs)}
                rows.append(row)
                print("  " + _fmt_row(row), flush=True)
        if grid and size == sizes[-1]:
            cols = [samples[s][:grid_count] for s in sorted(samples, reverse=True)]
            write_pairs_grid(grid, cols + [torch.cat([open_world.renders_of(p, h, h, [seed]) for p in prompts])[:grid_count]])
    return rows


def _fmt_row(row):
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def write_pairs_grid(path, columns, per_row=4, cell=96, pad=4):
    """Images side by side per prompt (sample | exact render ...), `per_row` prompts per row."""
    import numpy as np
    from PIL import Image
    n, k = columns[0].shape[0], len(columns)
    rows = (n + per_row - 1) // per_row
    group_w = k * cell + (k - 1) + pad * 3
    grid = Image.new("RGB", (per_row * group_w, rows * (cell + pad)), "white")
    for i in range(n):
        x0, y0 = (i % per_row) * group_w, (i // per_row) * (cell + pad)
        for j, col in enumerate(columns):
            arr = (col[i].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            grid.paste(Image.fromarray(arr).resize((cell, cell), Image.NEAREST), (x0 + j * (cell + 1), y0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo-flux", help="demo-flux, demo-kontext or a weights path")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32], help="latent sides (image = 2x)")
    ap.add_argument("--steps", type=int, nargs="+", default=[30], help="several: demo-flux-open only")
    ap.add_argument("--two-seeds", action="store_true", help="demo-flux-open: PSNR between two seeds' samples")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--grid", default=None, help="write a PNG grid of samples next to exact renders")
    ap.add_argument("--grid-size", type=int, default=None, help="latent size shown in the grid (default: last)")
    args = ap.parse_args(argv)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from fastdit.testing import comfy_env
    comfy_env.boot(load_pack=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.model}: {args.prompts} prompts, {' / '.join(map(str, args.steps))} steps, cfg {args.cfg}, euler/simple")
    from . import models
    if args.model == "demo-flux-open" or (args.model not in models.WEIGHT_FILES and
                                          models.load(args.model).metadata.get("world") == "open"):
        evaluate_open(models.load(args.model), args.prompts, args.sizes, args.steps, args.cfg, args.seed,
                      args.two_seeds, args.grid)
        return 0
    evaluate(args.model, args.prompts, args.sizes, args.steps[0], args.cfg, args.seed, args.grid, args.grid_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
