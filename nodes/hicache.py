"""FastDiTHiCache: HiCache feature forecasting (and its TaylorSeer-family baselines) as a model patch."""
from comfy_api.latest import io

from ..fastdit.caching import MODES, TaylorCacheConfig, apply_hicache
from ..fastdit.caching.config import CACHE_DEVICES, GRANULARITIES
from ..fastdit.caching.schedule import PAPER_INTERVAL, PAPER_WARMUP, SPEED_PRESETS

SPEED_TOOLTIP = ("Target speed-up. A preset derives interval and warm-up from the sampler's step count at run time: "
                 "auto = the paper's setting scaled to your steps (N=7, 3 warm-up steps at 50 steps: 5.6x fewer "
                 "FLOPs; N=4, warm-up 2 at 30 steps: 3.3x; N=3, warm-up 2 at 20 steps: 2.5x; all steps in full at "
                 "10 steps or fewer); 2x / 3x / 4x = about that many times fewer full steps, never forecasting "
                 "further ahead than auto (at N=2, one step ahead, with Taylor coefficients: closer to the uncached image "
                 "there than the Hermite damping). The interval and warmup_steps inputs apply only with custom. Each run's "
                 "log line names the preset and its full vs forecast steps.")


class FastDiTHiCache(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTHiCache",
            display_name="HiCache (Hermite feature forecast)",
            category="FastDiT/caching",
            description="Speeds up FLUX.1 (dev/Kontext), Qwen-Image(-Edit), HunyuanVideo and Wan without training: "
                        "every `interval` steps the transformer runs in full and caches its per-module features; "
                        "in between, the features are forecast with scaled Hermite polynomials (HiCache, ICLR 2026) "
                        "and attention and MLPs are skipped. Defaults are the paper's FLUX.1-dev setting "
                        "(N=7, order 2, sigma 0.5, 3 warm-up steps: 5.56x fewer FLOPs at 50 steps); the speed "
                        "preset (default auto) scales interval and warm-up to the run's step count. "
                        "Each run logs its full vs forecast steps, cost ratio and cache memory.",
            inputs=[
                io.Model.Input("model"),
                io.Int.Input("interval", default=7, min=1, max=100,
                             tooltip="N: a full computation every N steps after warm-up; the steps in between are "
                                     "forecast. 1 = never forecast (identical to the unpatched model). The paper "
                                     "uses 5 to 8 at 50 steps (4.2x to 6.3x fewer FLOPs). Applies only with "
                                     "speed = custom."),
                io.Int.Input("order", default=2, min=0, max=3,
                             tooltip="Highest finite difference used by the forecast. 2 is the paper's FLUX setting; "
                                     "each order keeps one more copy of every cached feature (memory)."),
                io.Float.Input("sigma", default=0.5, min=0.05, max=2.0, step=0.01,
                               tooltip="Hermite contraction sigma: damps higher orders and keeps the polynomial in its "
                                       "stable range. Paper: 0.5 for FLUX.1-dev, 0.3 for FLUX.1-schnell; 1.0 = no "
                                       "contraction (much worse)."),
                io.Int.Input("warmup_steps", default=3, min=0, max=100,
                             tooltip="Steps computed in full at the start before any forecast (first_enhance). "
                                     "Applies only with speed = custom."),
                io.Combo.Input("mode", options=list(MODES), default="hicache",
                               tooltip="hicache = Hermite forecast (the paper). The published baselines on the same "
                                       "cache, for comparison: hi-taylor = Taylor with HiCache's dual scaling, "
                                       "taylorseer = plain Taylor (TaylorSeer), reuse = reuse the last features (FORA)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Forecasting may act from this point of the schedule on (0 = from the start)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Forecasting may act until this point of the schedule (1 = to the end). Steps "
                                       "outside [start, end] are computed in full."),
                io.Combo.Input("granularity", options=list(GRANULARITIES), default="module",
                               tooltip="module = the paper's per-module cache (attention and MLP outputs of each block, "
                                       "gates recomputed every step). block = forecast each block's output change: "
                                       "less memory, usually less faithful."),
                io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default="compute", optional=True,
                               tooltip="Where cached features live: the model's device (fast) or cpu (saves GPU memory, "
                                       "slower). FLUX.1-dev at 1024x1024, order 2: about 6.5 GB of cache."),
                io.Combo.Input("speed", options=list(SPEED_PRESETS), default="auto", optional=True,
                               tooltip=SPEED_TOOLTIP),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, interval, order, sigma, warmup_steps, mode, start_percent, end_percent, granularity,
                cache_device="compute", speed="custom") -> io.NodeOutput:
        if speed != "custom":  # the preset decides; the widgets must not change the run
            interval, warmup_steps = PAPER_INTERVAL, PAPER_WARMUP
        config = TaylorCacheConfig(interval=interval, order=order, sigma=sigma, warmup_steps=warmup_steps, mode=mode,
                                   start_percent=start_percent, end_percent=end_percent, granularity=granularity,
                                   cache_device=cache_device, speed=speed)
        return io.NodeOutput(apply_hicache(model, config))
