"""Fresco img2img on demo-flux: how much of the source image survives at each denoise.

    python -m bench.fresco_img2img --size 32 --steps 18 --prompts 8 --denoise 0.05 0.1 0.3 0.5 0.7 1.0

For each prompt the exact render of the demo world is the source image; it is encoded, noised to
the first sigma of a KSampler-style denoise schedule (the last `steps` sigmas of int(steps /
denoise)) with the seed's noise, and sampled by plain Euler and by a Fresco preset over the same
sigmas (the SAMPLER form, as SamplerCustomAdvanced runs it; FastDiTFrescoKSampler computes the same
sigmas). Reported per denoise: the mean PSNR of the decoded result against the source image for
both, and Fresco's cost ratio (the one it logs, cost of the same steps at full resolution over its
own) plus the FLOPs ratio counted as executed (Euler's FLOPs over Fresco's).
"""
import argparse
import logging
import math
import os
import platform
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Ratios(logging.Handler):
    """Collects the cost ratio of each Fresco run from its log line."""

    def __init__(self):
        super().__init__()
        self.ratios = []

    def emit(self, record):
        m = re.search(r"full-resolution steps \(([0-9.]+)x\)", record.getMessage())
        if m:
            self.ratios.append(float(m.group(1)))


def run(size=32, steps=18, n_prompts=8, denoises=(0.05, 0.1, 0.3, 0.5, 0.7, 1.0), preset="balanced", seed=0,
        cfg=3.0, options=None, log=print):
    import torch

    import comfy.sample
    import comfy.samplers
    from demo import models, world
    from fastdit import metrics
    from fastdit.dynres.fresco import fresco_sampler
    from fastdit.dynres.ksampler import denoise_sigmas
    from fastdit.dynres.stages import preset_options

    demo = models.cached("demo-flux")
    vae = models.vae()
    base = demo.patcher()
    counter = metrics.FlopCounter(base)
    model = counter.install(base)
    fresco = fresco_sampler(preset_options(preset, **(options or {})))
    euler = comfy.samplers.sampler_object("euler")
    ratios = _Ratios()
    logger = logging.getLogger("FastDiT")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(ratios)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        negative = demo.conditioning("")
        rows = []
        for d in denoises:
            psnr = {"euler": [], "fresco": [], "between": []}
            flops = {"euler": 0, "fresco": 0}
            ratios.ratios.clear()
            for prompt in world.benchmark_prompts(n_prompts):
                source = world.render(world.parse(prompt), 2 * size, 2 * size)
                latent = vae.encode(source)
                noise = comfy.sample.prepare_noise(latent, seed)
                sigmas = denoise_sigmas(model, "simple", steps, d)
                images = {}
                for name, sampler in (("euler", euler), ("fresco", fresco)):
                    counter.reset()
                    with torch.no_grad():
                        out = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, demo.conditioning(prompt),
                                                         negative, latent, disable_pbar=True, seed=seed)
                    flops[name] += counter.flops
                    images[name] = vae.decode(out).clamp(0, 1)
                    psnr[name].append(float(metrics.psnr(images[name], source)[0]))
                psnr["between"].append(float(metrics.psnr(images["fresco"], images["euler"])[0]))
            row = {"denoise": d, "first_sigma": float(denoise_sigmas(model, "simple", steps, d)[0]),
                   "psnr_euler": sum(psnr["euler"]) / n_prompts, "psnr_fresco": sum(psnr["fresco"]) / n_prompts,
                   "psnr_fresco_vs_euler": sum(psnr["between"]) / n_prompts,
                   "cost_ratio": sum(ratios.ratios) / len(ratios.ratios),
                   "flops_ratio": flops["euler"] / flops["fresco"]}
            rows.append(row)
            log(f"denoise {d:<5} sigma0 {row['first_sigma']:.3f}  PSNR vs source: Euler {row['psnr_euler']:6.2f} dB, "
                f"Fresco {row['psnr_fresco']:6.2f} dB ({row['psnr_fresco'] - row['psnr_euler']:+.2f}); "
                f"Fresco vs Euler {row['psnr_fresco_vs_euler']:.2f} dB  "
                f"cost ratio {row['cost_ratio']:.2f}x  FLOPs ratio {row['flops_ratio']:.2f}x")
    finally:
        logger.removeHandler(ratios)
        logger.setLevel(level)
        logger.propagate = propagate
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=32, help="latent height and width (image: twice that)")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--denoise", type=float, nargs="+", default=[0.05, 0.1, 0.3, 0.5, 0.7, 1.0])
    p.add_argument("--preset", default="balanced", choices=["quality", "balanced", "fast"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a Fresco option on top of the preset, e.g. transition=snr_matched (repeatable)")
    args = p.parse_args(argv)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from fastdit.testing import comfy_env
    comfy_env.boot(load_pack=False)
    import torch
    torch.set_num_threads(args.threads)
    from bench.configs import parse_spec
    options = parse_spec("fresco:" + ",".join(args.option))[1]
    print(f"demo-flux, {args.size}x{args.size} latent, {args.steps} steps, CFG {args.cfg}, Fresco {args.preset}"
          f"{''.join(f', {k}={v}' for k, v in options.items())}, {args.prompts} prompts, seed {args.seed}; "
          f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)")
    rows = run(args.size, args.steps, args.prompts, args.denoise, args.preset, args.seed, args.cfg, options)
    print("\n| denoise | first sigma | Euler vs source, dB | Fresco vs source, dB | difference | Fresco vs Euler, dB "
          "| cost ratio | FLOPs ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['denoise']} | {r['first_sigma']:.3f} | {r['psnr_euler']:.2f} | {r['psnr_fresco']:.2f} | "
              f"{r['psnr_fresco'] - r['psnr_euler']:+.2f} | {r['psnr_fresco_vs_euler']:.2f} | {r['cost_ratio']:.2f}x | "
              f"{r['flops_ratio']:.2f}x |")
    return 0 if all(math.isfinite(r["psnr_fresco"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
