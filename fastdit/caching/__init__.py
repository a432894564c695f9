"""Feature caching: per-module (or per-block) features cached at full steps and forecast between
them (HiCache and the TaylorSeer-family baselines; another forecaster can reuse the machinery).

    interface    what a technique hands the machinery: config, Forecaster, Observer, Shared data
    schedule     full vs forecast per solver step, from the sigma schedule (TaylorSeer's plan)
    forecasters  update and forecast rules as pure functions (HiCache, arXiv 2508.16984)
    store        per-run slot store keyed by cond uuid, block and resolution
    run          the state of one sampling run and its one-line report
    comfy_hooks  keyed ComfyUI wrappers and dit block replacements that drive the above
"""
from .config import TaylorCacheConfig
from .forecasters import MODES

HICACHE_KEY = "fastdit_hicache"


def apply_hicache(model, config=None, **options):
    """A patched clone of `model` (ModelPatcher) running HiCache (or a baseline via `mode`)."""
    from .comfy_hooks import install
    return install(model, config or TaylorCacheConfig(**options), HICACHE_KEY)


__all__ = ["HICACHE_KEY", "MODES", "TaylorCacheConfig", "apply_hicache"]
