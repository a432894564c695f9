"""Feature caching: per-module (or per-block) features cached at full steps and forecast between
them (HiCache and the TaylorSeer-family baselines; another forecaster can reuse the machinery).

    interface    what a technique hands the machinery: config, Forecaster, Observer, Shared data
    schedule     full vs forecast per solver step, from the sigma schedule (TaylorSeer's plan)
    forecasters  update and forecast rules as pure functions (HiCache, arXiv 2508.16984)
    store        per-run slot store keyed by cond uuid, block and resolution
    run          the state of one sampling run and its one-line report
    comfy_hooks  keyed ComfyUI wrappers and dit block replacements that drive the above
    svd          SVD-Cache: per-slot bases (calibration, file), the subspace forecaster
"""
from .config import TaylorCacheConfig
from .forecasters import MODES

HICACHE_KEY = "fastdit_hicache"
SVDCACHE_KEY = "fastdit_svdcache"


def apply_hicache(model, config=None, **options):
    """A patched clone of `model` (ModelPatcher) running HiCache (or a baseline via `mode`)."""
    from .comfy_hooks import install
    return install(model, config or TaylorCacheConfig(**options), HICACHE_KEY)


def apply_svdcache(model, config=None, **options):
    """A patched clone of `model` running SVD-Cache (`svd.SVDCacheConfig`); raises ValueError when the
    model is not supported or the basis was calibrated on another family, width or slot layout."""
    from ..adapters import for_model
    from .comfy_hooks import install
    from .svd import SVDCacheConfig
    config = config or SVDCacheConfig(**options)
    adapter = for_model(model, technique=config.technique)
    if config.subspace == "basis":
        config.basis.check_model(adapter, config.technique)
    return install(model, config, SVDCACHE_KEY)


__all__ = ["HICACHE_KEY", "MODES", "SVDCACHE_KEY", "TaylorCacheConfig", "apply_hicache", "apply_svdcache"]
