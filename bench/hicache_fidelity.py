"""HiCache fidelity and cost on a small random-weight FLUX, in one process on CPU.

Compares, at the same seed, the uncached 50-step run with HiCache at N = 5/7/8, the TaylorSeer,
Hi-Taylor and reuse (FORA) baselines on the same cache, block granularity, and ComfyUI's EasyCache
tuned to about the same cost. Reports the FLOPs-style cost ratio (block computations of the
baseline / of the method), the wall-clock ratio, and PSNR/SSIM of the decoded images against the
baseline (pooled over seeds). Random weights make forecasting look harder or easier than on a
trained model: read the ranking, not the absolute numbers.

    .venv/bin/python -m bench.hicache_fidelity [--steps 50] [--size 32] [--seeds 0 1 2] [--json out.json]
"""
import argparse
import json
import logging
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_flux(seed=0):
    """A FLUX.1-architecture model, hidden 256, 2 double + 4 single blocks, random weights."""
    import dataclasses

    import comfy.ldm.flux.model as flux_model
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    from fastdit.testing.tiny_models import init_weights
    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64,
               hidden_size=256, mlp_ratio=4.0, num_heads=4, depth=2, depth_single_blocks=4,
               axes_dim=[16, 24, 24], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(flux_model.FluxParams)}:
        cfg["txt_ids_dims"] = []
    mc = sm.Flux(cfg)
    mc.set_inference_dtype(__import__("torch").float32, None)
    base = mc.get_model({})
    init_weights(base.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


class LogTap(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def cases(steps):
    from comfy_extras.nodes_easycache import EasyCacheNode
    from fastdit.caching import apply_hicache

    def hicache(**kw):
        return lambda m: apply_hicache(m, **kw)

    def easycache(threshold):
        return lambda m: EasyCacheNode.execute(model=m, reuse_threshold=threshold, start_percent=0.15,
                                               end_percent=0.95, verbose=False).args[0]

    rows = [("baseline", None)]
    for n in (5, 7, 8):
        rows.append((f"hicache N={n}", hicache(interval=n)))
    for n in (5, 7, 8):
        rows.append((f"taylorseer N={n}", hicache(interval=n, mode="taylorseer")))
    for n in (5, 7, 8):
        rows.append((f"reuse N={n}", hicache(interval=n, mode="reuse")))
    rows.append(("hi-taylor N=7", hicache(interval=7, mode="hi-taylor")))
    rows.append(("hicache N=7 block", hicache(interval=7, granularity="block")))
    rows.append(("taylorseer N=7 block", hicache(interval=7, mode="taylorseer", granularity="block")))
    for t in (0.35, 0.4, 0.5, 0.7, 1.0):
        rows.append((f"easycache thr={t}", easycache(t)))
    return rows


def cost_ratio(lines, steps):
    for line in reversed(lines):
        m = re.search(r"cost ratio ([\d.]+)x", line)
        if m and line.startswith("HiCache"):
            return float(m.group(1))
        m = re.search(r"EasyCache - skipped (\d+)/(\d+)", line)
        if m:
            return int(m.group(2)) / (int(m.group(2)) - int(m.group(1)))
    return 1.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=32, help="latent height and width (image = 2x)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cfg", type=float, default=1.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from fastdit.testing import comfy_env
    comfy_env.boot(load_pack=False)
    import torch

    import comfy.sample
    from demo.latent_space import latent_to_pixels
    from fastdit import metrics
    from fastdit.testing import tiny_models as tm

    torch.set_num_threads(1)
    tap = LogTap()
    logging.getLogger().addHandler(tap)
    logging.getLogger().setLevel(logging.INFO)
    model = small_flux(0)
    results, baseline = [], {}

    def run(patched, seed):
        latent = torch.zeros(tm.latent_shape("flux", args.size, args.size))
        noise = comfy.sample.prepare_noise(latent, seed)
        pos, neg = tm.conditioning("flux", seed), tm.conditioning("flux", seed + 100)
        return comfy.sample.sample(patched, noise, args.steps, args.cfg, "euler", "simple", pos, neg, latent,
                                   disable_pbar=True, seed=seed)

    run(model, args.seeds[0])  # warm-up: model load and first-call overheads stay out of the timings
    for name, prepare in cases(args.steps):
        patched = model if prepare is None else prepare(model)
        images, walls, ratios = [], [], []
        for seed in args.seeds:
            tap.lines.clear()
            t0 = time.perf_counter()
            out = run(patched, seed)
            walls.append(time.perf_counter() - t0)
            ratios.append(cost_ratio(tap.lines, args.steps))
            images.append(latent_to_pixels(out))
        img = torch.cat(images)
        if prepare is None:
            baseline = {"img": img, "wall": sum(walls)}
        p = metrics.psnr(baseline["img"], img)
        row = {"config": name, "cost_ratio": sum(ratios) / len(ratios), "wall_ratio": baseline["wall"] / sum(walls),
               "psnr": metrics.pooled_psnr(p), "ssim": float(metrics.ssim(baseline["img"], img).mean())}
        results.append(row)
        print(f"{name:24s} cost {row['cost_ratio']:5.2f}x  wall {row['wall_ratio']:5.2f}x  "
              f"PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.4f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
