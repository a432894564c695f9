"""Bench configuration `hicache`: HiCache, or one of its baselines on the same cache via `mode`.

    hicache                                   the paper's FLUX.1-dev setting (N=7, O=2, sigma=0.5, warm-up 3)
    hicache:interval=5,mode=taylorseer        TaylorSeer at N=5 (also hi-taylor, reuse)
    hicache:interval=7,granularity=block      block-output forecasting instead of per-module slots
    hicache:speed=auto                        a speed preset: interval and warm-up from the run's steps

Options: interval, order, sigma, warmup_steps, mode, granularity, start_percent, end_percent,
cache_device, speed. Sampling is the harness default.
"""
from . import Config, register


@register("hicache")
def hicache(**options):
    from fastdit.caching import TaylorCacheConfig, apply_hicache
    cache = TaylorCacheConfig(**options)
    return Config("hicache", prepare=lambda model: apply_hicache(model, cache))
