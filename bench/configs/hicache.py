"""Bench config `hicache`: HiCache (or one of its baselines via `mode`) applied to the model under test.

Options: interval, order, sigma, warmup_steps, mode (hicache | hi-taylor | taylorseer | reuse),
granularity (module | block), start_percent, end_percent, cache_device. Defaults are the paper's
FLUX.1-dev setting (N=7, O=2, sigma=0.5, 3 warm-up steps, module slots). Sampling is the harness
default; the harness measures FLOPs, wall time and fidelity itself.
"""
from . import Config, register


class HiCacheBenchConfig(Config):
    def __init__(self, cache_config):
        self.cache_config = cache_config
        self.name = f"hicache ({cache_config.describe()})"

    def prepare(self, model):
        from fastdit.caching import apply_hicache
        return apply_hicache(model, self.cache_config)


@register("hicache")
def hicache(**options):
    from fastdit.caching import TaylorCacheConfig
    return HiCacheBenchConfig(TaylorCacheConfig(**options))
