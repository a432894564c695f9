"""GPU bench: wall time and peak memory on the full-size FLUX.1-dev architecture (random bf16 weights:
speed does not depend on them): baseline, HiCache, SVD-Cache, the Fresco presets and Fresco + HiCache,
a FLUX.1 Kontext edit and SpecEdit on it,
plus the achieved bandwidth of the fused forecast kernel, of the mixed-token gather / scatter kernels
and the throughput of SVD-Cache's fused low-rank split.

One script, one process, baseline and techniques measured back to back on the same card:

    python -m bench.gpu_bench --out "$OUT"          # GPU: FLUX.1-dev dims, 1024x1024, 50 steps (< 8 min)
    python -m bench.gpu_bench --tiny --out /tmp/b   # CPU check of the script itself (seconds)

Rows are a list of `Case`s (name, how to patch the model, how to sample): add a technique by
appending a case. Results go to OUT/gpu_bench.json and are printed as a table.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLUX_DEV = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38,
                axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)
TINY = dict(FLUX_DEV, vec_in_dim=32, context_in_dim=64, hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=2,
            depth_single_blocks=2, axes_dim=[8, 12, 12])


@dataclasses.dataclass
class Setting:
    steps: int
    latent: int        # latent height = width (image / 8 for FLUX.1's VAE)
    text_tokens: int
    dtype: str


GPU_SETTING = Setting(steps=50, latent=128, text_tokens=512, dtype="bfloat16")
TINY_SETTING = Setting(steps=10, latent=16, text_tokens=8, dtype="float32")


def default_sample(model, noise, positive, negative, latent, steps, seed):
    """The bench's default sampling (euler / simple, ComfyUI's KSampler path) at CFG 1."""
    from bench.configs import Config
    return Config("baseline").sample(model, noise, positive, negative, latent, steps, 1.0, seed)


@dataclasses.dataclass
class Case:
    name: str
    prepare: object = None          # model -> patched clone (None: the model itself)
    sample: object = default_sample


def hicache_case(name, **options):
    def prepare(model):
        from fastdit.caching import apply_hicache
        return apply_hicache(model, **options)
    return Case(name, prepare)


def svdcache_case(name, **options):
    """SVD-Cache with its defaults (N=7, trend, beta 0.3) and a basis calibrated at tau 0.85 before the
    timing, on a short low-resolution run of the same model (random weights: the basis only sets k)."""
    def prepare(model):
        import torch

        from fastdit.adapters import diffusion_model_of
        from fastdit.caching import apply_svdcache
        from fastdit.caching.svd import calibrate
        dm = diffusion_model_of(model)
        gen = torch.Generator().manual_seed(7)
        cond = [[torch.randn(1, 8, dm.txt_in.in_features, generator=gen),
                 {"pooled_output": torch.randn(1, dm.vector_in.in_layer.in_features, generator=gen), "guidance": 3.5}]]
        latent = {"samples": torch.zeros(1, 16, 16, 16)}
        basis, _ = calibrate(model, cond, cond, latent, 10, 1.0, 0, interval=options.get("interval", 7), tau=0.85)
        return apply_svdcache(model, basis=basis, **options)
    return Case(name, prepare)


def fresco_case(name, preset, stack=None, **options):
    """A Fresco preset at its own step count (the operating point's NFE), against the 50-step baseline."""
    def sample(model, noise, positive, negative, latent, steps, seed):
        from bench.configs.fresco import sample_fresco
        from fastdit.dynres.fresco import fresco_sampler
        from fastdit.dynres.stages import PRESETS, preset_options
        n = PRESETS[preset].nfe if steps >= 50 else max(steps * PRESETS[preset].nfe // 50, 3)
        return sample_fresco(model, noise, 1.0, fresco_sampler(preset_options(preset, **options)), n,
                             positive, negative, latent, seed)
    prepare = hicache_case(name, **stack).prepare if stack else None
    return Case(name, prepare, sample)


def with_reference(conds, seed):
    """FLUX.1 Kontext conditioning: the same conds with a random source image latent as reference."""
    import torch
    out = []
    for cond, extra in conds:
        shape = extra["_latent_shape"]
        source = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.5
        out.append([cond, {k: v for k, v in extra.items() if k != "_latent_shape"} | {"reference_latents": [source]}])
    return out


def kontext_case(name, spec=None):
    """A FLUX.1 Kontext edit (the same FLUX.1-dev weights, a reference latent of the target's size in
    the conditioning): the plain edit at the bench's steps, or a bench configuration `spec` (e.g.
    SpecEdit at its own step count). Compare such rows with the Kontext baseline row, whose sequence
    is twice the text-to-image one."""
    def sample(model, noise, positive, negative, latent, steps, seed):
        from bench.configs import build
        def tagged(conds):
            return [[c, dict(e, _latent_shape=tuple(latent.shape))] for c, e in conds]
        pos, neg = with_reference(tagged(positive), 11), with_reference(tagged(negative), 11)
        config = build(spec or "baseline")
        return config.sample(config.prepare(model), noise, pos, neg, latent, steps, 1.0, seed)
    return Case(name, None, sample)


CASES = [
    Case("baseline"),
    hicache_case("hicache N=7 (module)", interval=7),
    hicache_case("hicache N=7 (block)", interval=7, granularity="block"),
    svdcache_case("svdcache N=7 (trend, tau 0.85)"),
    fresco_case("fresco quality (30 NFE)", "quality"),
    fresco_case("fresco balanced (18 NFE)", "balanced"),
    fresco_case("fresco fast (9 NFE)", "fast"),
    fresco_case("fresco balanced + hicache", "balanced", stack={"interval": 4, "warmup_steps": 1}),
    kontext_case("kontext edit baseline"),
    # random weights draw no edit: a budget of 25 % of the cells stands in for an edit of that size
    kontext_case("specedit balanced (25% refined)", "specedit:budget=0.25,measure=latent"),
]


def build_flux(config, dtype, device):
    """A FLUX model of the given dims built directly on `device`, weights N(0, 0.02)."""
    import torch

    import comfy.ldm.flux.model as flux_model
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    cfg = dict(config)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(flux_model.FluxParams)}:
        cfg["txt_ids_dims"] = []
    mc = sm.Flux(cfg)
    mc.set_inference_dtype(dtype, None)
    base = mc.get_model({}, device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in base.diffusion_model.parameters():
            p.normal_(0.0, 0.02)
    base.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def conditioning(config, setting, seed):
    import torch
    gen = torch.Generator().manual_seed(seed)
    ctx = torch.randn(1, setting.text_tokens, config["context_in_dim"], generator=gen)
    return [[ctx, {"pooled_output": torch.randn(1, config["vec_in_dim"], generator=gen), "guidance": 3.5}]]


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mean_seconds(fn, device, repeats):
    """Mean wall time of fn() after one warm-up call, synchronised on `device`."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def run_cases(cases, config, setting, device, repeats):
    import torch

    import comfy.sample
    dtype = getattr(torch, setting.dtype)
    model = build_flux(config, dtype, device)
    latent = torch.zeros(1, 16, setting.latent, setting.latent)
    noise = comfy.sample.prepare_noise(latent, 0)
    pos, neg = conditioning(config, setting, 0), conditioning(config, setting, 1)
    rows, reference = [], None
    for case in cases:
        patched = model if case.prepare is None else case.prepare(model)
        # warm-up (load, allocator, Triton compile): 5 steps reach HiCache's first forecasts
        case.sample(patched, noise, pos, neg, latent, 5, 0)
        walls = []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            out = case.sample(patched, noise, pos, neg, latent, setting.steps, 0)
            _sync(device)
            walls.append(time.perf_counter() - t0)
        row = {"case": case.name, "wall_s": min(walls), "walls_s": walls,
               "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None,
               "finite": bool(torch.isfinite(out).all())}
        if reference is None:
            reference = {"wall": row["wall_s"], "out": out}
        row["speedup"] = reference["wall"] / row["wall_s"]
        row["rel_err_vs_baseline"] = float(((out - reference["out"]).pow(2).mean() / reference["out"].pow(2).mean()).sqrt())
        rows.append(row)
        print(f"{case.name:28s} {row['wall_s']:8.2f} s  x{row['speedup']:5.2f}  peak "
              f"{row['peak_mem_gib'] if row['peak_mem_gib'] is not None else float('nan'):6.1f} GiB", flush=True)
    del model
    return rows


def kernel_bandwidth(device, numel, n_terms=3, repeats=20):
    """GB/s of the forecast (n_terms reads + 1 write) vs a plain copy (1 read + 1 write) on one card."""
    import torch

    from kernels import backend
    from kernels.forecast import forecast, forecast_reference
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    terms = [torch.randn(numel, device=device, dtype=dtype) for _ in range(n_terms)]
    out = torch.empty_like(terms[0])
    coeffs = [0.5, -0.25, 0.125][:n_terms - 1]
    size = terms[0].element_size() * numel

    copy_s = mean_seconds(lambda: out.copy_(terms[0]), device, repeats)
    fused_s = mean_seconds(lambda: forecast(terms, coeffs, out=out), device, repeats)
    ref_s = mean_seconds(lambda: forecast_reference(terms, coeffs, out=out), device, repeats)
    res = {"backend": backend(terms[0]), "dtype": str(dtype), "numel": numel, "n_terms": n_terms,
           "copy_GBps": 2 * size / copy_s / 1e9, "forecast_GBps": (n_terms + 1) * size / fused_s / 1e9,
           "torch_reference_GBps": (n_terms + 1) * size / ref_s / 1e9}
    res["forecast_vs_copy"] = res["forecast_GBps"] / res["copy_GBps"]
    print(f"forecast kernel ({res['backend']}, {n_terms} terms, {dtype}): {res['forecast_GBps']:.0f} GB/s, "
          f"copy {res['copy_GBps']:.0f} GB/s ({res['forecast_vs_copy']:.0%}), "
          f"torch reference {res['torch_reference_GBps']:.0f} GB/s", flush=True)
    return res


def lowrank_throughput(device, m, d, k, repeats=10):
    """SVD-Cache's split C = F V, R = F - C V^T: the fused kernel (Triton on CUDA) vs the torch reference
    (two fp32 matmuls), as GB/s of F read + R written and TFLOP/s of the two products (4 m d k)."""
    import torch

    from kernels import backend
    from kernels.lowrank import split, split_reference
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(m, d, generator=gen).to(device, dtype)
    v = torch.linalg.qr(torch.randn(d, k, generator=gen))[0].to(device)
    moved = 2 * f.numel() * f.element_size() + m * k * 4
    fused_s = mean_seconds(lambda: split(f, v), device, repeats)
    ref_s = mean_seconds(lambda: split_reference(f, v), device, repeats)
    res = {"backend": backend(f), "dtype": str(dtype), "m": m, "d": d, "k": k,
           "fused_GBps": moved / fused_s / 1e9, "fused_TFLOPs": 4 * m * d * k / fused_s / 1e12,
           "torch_reference_GBps": moved / ref_s / 1e9, "torch_reference_TFLOPs": 4 * m * d * k / ref_s / 1e12}
    res["fused_vs_reference"] = ref_s / fused_s
    print(f"lowrank split ({res['backend']}, {dtype}, {m}x{d}, k={k}): {res['fused_TFLOPs']:.2f} TFLOP/s "
          f"({res['fused_GBps']:.0f} GB/s), torch reference {res['torch_reference_TFLOPs']:.2f} TFLOP/s "
          f"({res['fused_vs_reference']:.2f}x)", flush=True)
    return res


def token_kernel_bandwidth(device, latent_hw, repeats=20):
    """GB/s of the mixed-token gather and scatter (half the cells fine, half coarse) on one card."""
    import torch

    from kernels import backend
    from kernels.tokens import gather_tokens, scatter_tokens
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    latent = torch.randn(1, 16, 1, latent_hw, latent_hw, device=device, dtype=dtype)
    rows = []
    for cy in range(0, latent_hw, 4):                 # 4x4-pixel cells: fine (4 tokens) or coarse (1)
        for cx in range(0, latent_hw, 4):
            if (cy // 4 + cx // 4) % 2:
                rows += [(0, cy + dy, cx + dx, 1) for dy in (0, 2) for dx in (0, 2)]
            else:
                rows.append((0, cy, cx, 2))
    rows = torch.tensor(rows, dtype=torch.int32, device=device)[None]

    tokens = gather_tokens(latent, rows, 2)
    moved = latent.numel() * latent.element_size() + tokens.numel() * tokens.element_size()
    res = {"backend": backend(latent), "dtype": str(dtype), "latent": latent_hw, "tokens": int(tokens.shape[1]),
           "gather_GBps": moved / mean_seconds(lambda: gather_tokens(latent, rows, 2), device, repeats) / 1e9,
           "scatter_GBps": moved / mean_seconds(lambda: scatter_tokens(tokens, rows, latent.shape, 2), device, repeats) / 1e9}
    print(f"token kernels ({res['backend']}, {dtype}, {res['tokens']} tokens): gather {res['gather_GBps']:.0f} GB/s, "
          f"scatter {res['scatter_GBps']:.0f} GB/s", flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script, not the speed")
    ap.add_argument("--out", default=os.environ.get("OUT", os.path.join(ROOT, "out", "gpu_bench")))
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per case (the fastest is reported)")
    args = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from fastdit.testing import comfy_env
    comfy_env.boot(load_pack=False, cpu=args.tiny)
    import torch

    import comfy.model_management as mm
    device = mm.get_torch_device()
    if not args.tiny and device.type != "cuda":
        raise SystemExit("no CUDA device: run with --tiny to check the script on CPU")
    config, setting = (TINY, TINY_SETTING) if args.tiny else (FLUX_DEV, GPU_SETTING)
    t0 = time.time()
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "setting": dataclasses.asdict(setting), "model": config}
    result["cases"] = run_cases(CASES, config, setting, device, args.repeats)
    result["kernel"] = kernel_bandwidth(device, numel=2 ** 16 if args.tiny else 4608 * 3072 * 8)
    result["token_kernels"] = token_kernel_bandwidth(device, 16 if args.tiny else 128)
    # FLUX.1-dev at 1024x1024: 4096 image + 512 text tokens per slot, D = 3072, k ~ 512
    result["lowrank"] = lowrank_throughput(device, *((256, 64, 16) if args.tiny else (4608, 3072, 512)))
    result["total_s"] = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_bench.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {os.path.join(args.out, 'gpu_bench.json')} ({result['total_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
