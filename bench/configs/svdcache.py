"""Bench configuration `svdcache`: SVD-Cache with a basis calibrated by the configuration itself.

    svdcache                                  N=7, beta 0.3, trend, tau 0.85, basis from another prompt
    svdcache:interval=5,ema_mode=holt         (also level)
    svdcache:tau=0.95                         the rank rule's energy threshold
    svdcache:beta=0.9                         the paper's quoted beta (history weight)
    svdcache:basis=same                       a basis per bench prompt, calibrated on that very prompt
    svdcache:subspace=none                    no decomposition: reuse the whole feature (plain reuse)
    svdcache:subspace=full                    the EMA rule on the whole feature (no residual split)

basis=other (default) calibrates once, before any timing, on a reference prompt that is not among
the bench prompts (demo models: a demo-world prompt from another seed, for demo-kontext an edit of
another seed with its source image as the reference; other models: random text features of another
seed), at `calib_size` (latent side), `calib_steps` and the model's bench CFG
(`calib_cfg`). basis=same calibrates inside each sampling call on the job's own prompt, seed and
resolution with the bench's steps: its FLOPs column counts only the cached run (the calibration
runs on the uncounted model), but its wall clock includes the calibration.
Other options: interval, beta, ema_mode, warmup_steps, start_percent, end_percent, cache_device, speed
(a preset such as svdcache:speed=auto: the calibration records the full steps of the preset's
schedule at calib_steps).
"""
from . import Config, register

_GRAMS = {}   # calibration runs shared by rows that differ only in tau (per process)
DEMO_MODELS = ("demo-flux", "demo-kontext", "demo-flux-open")


def _reference(model, size):
    """(positive, negative, latent dict) of a calibration prompt that no bench job uses."""
    import torch

    from fastdit.adapters import diffusion_model_of, for_model
    from fastdit.testing import tiny_models as tm
    dm = diffusion_model_of(model)
    try:
        from demo import models, open_world, world
        for name in DEMO_MODELS:
            if models.cached.cache_info().currsize and models.cached(name).diffusion_model is dm:
                demo = models.cached(name)
                if name == "demo-kontext":
                    return _edit_reference(demo, size)
                prompts = open_world.benchmark_prompts if name == "demo-flux-open" else world.benchmark_prompts
                prompt = prompts(1, seed=98765)[0]
                return (demo.conditioning(prompt), demo.conditioning(""),
                        {"samples": torch.zeros(1, 16, size, size)}, prompt)
    except ImportError:
        pass
    family = for_model(model).family
    fam = {"flux": "flux", "qwen_image": "qwen_image", "hunyuan_video": "hunyuan_video", "wan": "wan"}[family]
    frames = 3 if fam in ("hunyuan_video", "wan") else 1
    return (tm.conditioning(fam, seed=98765), tm.conditioning(fam, seed=10_000),
            {"samples": torch.zeros(tm.latent_shape(fam, size, size, frames=frames))}, "random text features")


def _edit_reference(demo, size):
    """An edit of demo-kontext that no bench job uses (its source image as the reference latent)."""
    import torch

    from demo import models
    from demo.bench_models import edit_cases, edit_conditioning
    src, edit = edit_cases(1, seed=98765)[0]
    positive, negative, _ = edit_conditioning(demo, models.vae(), src, edit, 2 * size, 2 * size)
    return positive, negative, {"samples": torch.zeros(1, 16, size, size)}, f"{src.prompt()} | {edit.prompt()}"


def _demo_cfg(model):
    try:
        from demo import models
        from demo.bench_models import DEFAULT_CFG
        from fastdit.adapters import diffusion_model_of
        dm = diffusion_model_of(model)
        if any(models.cached(n).diffusion_model is dm for n in DEMO_MODELS):
            return DEFAULT_CFG
    except ImportError:
        pass
    return 1.0


class SVDCacheRow(Config):
    def __init__(self, name, options, tau, basis, calib_size, calib_steps, calib_cfg):
        super().__init__(name)
        self.options, self.tau, self.basis_source = options, tau, basis
        self.calib_size, self.calib_steps, self.calib_cfg = calib_size, calib_steps, calib_cfg
        self.base_model = None
        self._bases = {}

    def _grams(self, model, positive, negative, latent, steps, cfg, seed, label):
        from fastdit.adapters import diffusion_model_of
        from fastdit.caching.svd import SVDCacheConfig, conditioning_hash, record_grams
        from fastdit.caching.schedule import resolve_schedule
        interval, warmup = resolve_schedule(SVDCacheConfig(**dict(self.options, subspace="none")),
                                            steps)  # the full steps of the row's own schedule at these steps
        key = (id(diffusion_model_of(model)), conditioning_hash(positive, negative), tuple(latent["samples"].shape),
               steps, cfg, seed, interval, warmup)
        if key not in _GRAMS:
            _GRAMS[key] = record_grams(model, positive, negative, latent, steps, cfg, seed, interval, warmup)[0]
            _GRAMS[key].meta["prompt"] = label
        return _GRAMS[key]

    def prepare(self, model):
        from fastdit.caching.svd import basis_from_grams
        self.base_model = model
        if self.basis_source == "other" and self.options.get("subspace", "basis") == "basis":
            pos, neg, latent, label = _reference(model, self.calib_size)
            cfg = self.calib_cfg if self.calib_cfg is not None else _demo_cfg(model)
            self._bases["other"] = basis_from_grams(
                self._grams(model, pos, neg, latent, self.calib_steps, cfg, 0, label), self.tau)
        return model

    def sample(self, model, noise, positive, negative, latent, steps, cfg, seed, callback=None):
        from fastdit.caching import apply_svdcache
        from fastdit.caching.svd import SVDCacheConfig, basis_from_grams
        basis = self._bases.get("other")
        if self.basis_source == "same" and self.options.get("subspace", "basis") == "basis":
            grams = self._grams(self.base_model, positive, negative, {"samples": latent}, steps, cfg, seed, "same")
            basis = basis_from_grams(grams, self.tau)
        patched = apply_svdcache(model, SVDCacheConfig(basis=basis, **self.options))
        return super().sample(patched, noise, positive, negative, latent, steps, cfg, seed, callback)


@register("svdcache")
def svdcache(tau=0.85, basis="other", calib_size=64, calib_steps=50, calib_cfg=None, **options):
    from fastdit.caching.svd import SVDCacheConfig
    if basis not in ("other", "same"):
        raise ValueError(f"basis must be other or same, not {basis!r}")
    if not 0.0 < float(tau) <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    SVDCacheConfig(subspace="none", **{k: v for k, v in options.items() if k != "subspace"})  # validate early
    return SVDCacheRow("svdcache", options, float(tau), basis, int(calib_size), int(calib_steps), calib_cfg)
