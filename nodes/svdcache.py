"""SVD-Cache nodes: one-time basis calibration and the model patch that forecasts the principal
subspace of every cached module output and reuses its residual."""
import logging
import os

import comfy.samplers
import folder_paths
from comfy_api.latest import io

from ..fastdit.caching import apply_svdcache
from ..fastdit.caching.schedule import PAPER_INTERVAL, PAPER_WARMUP, SPEED_PRESETS, preset_schedule
from ..fastdit.caching.svd import (BASIS_FOLDER, CACHE_DEVICES, CALIBRATION_NODE, EMA_MODES, SVDBasis, SVDCacheConfig,
                                   basis_filename, calibrate, register_basis_folder)

SVDBasisType = io.Custom("SVD_BASIS")
NO_FILE = "(none: use the basis input)"

register_basis_folder()

SPEED_TOOLTIP = ("Target speed-up. A preset derives interval and warm-up from the sampler's step count at run time: "
                 "auto = HiCache's paper setting scaled to your steps (N=7, 3 warm-up steps at 50 steps; N=4, "
                 "warm-up 2 at 30; N=3, warm-up 2 at 20; all steps in full at 10 steps or fewer); 2x / 3x / 4x = "
                 "about that many times fewer full steps, never forecasting further ahead than auto. The interval "
                 "and warmup_steps inputs apply only with custom. Each run's log line names the preset and its "
                 "full vs forecast steps.")


def _basis_files():
    try:
        return [NO_FILE] + folder_paths.get_filename_list(BASIS_FOLDER)
    except Exception:
        return [NO_FILE]


class FastDiTSVDCacheCalibrate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTSVDCacheCalibrate",
            display_name=CALIBRATION_NODE,
            category="FastDiT/caching",
            description="Runs the model once without caching (a KSampler run, with its progress bar) and records, "
                        "for every cached module output, the channel Gram matrix F^T F over the steps SVD-Cache "
                        "computes in full at this interval; its top eigenvectors (the smallest number reaching "
                        "tau of the energy) are the basis SVD-Cache forecasts in. Saves the basis to "
                        "models/fastdit_svd_bases (then pick it in the SVD-Cache node) and outputs it. One basis "
                        "serves every prompt and resolution of the model. Memory: the Gram matrices, D x D fp32 "
                        "per slot (~4.3 GB for FLUX.1-dev, 114 slots x 3072^2), on the model's device during the "
                        "run; the truncated basis is ~0.36 GB at k~512 (fp16).",
            inputs=[
                io.Model.Input("model", tooltip="The model SVD-Cache will patch (after LoRAs, before SVD-Cache)."),
                io.Conditioning.Input("positive", tooltip="A typical prompt: the basis is nearly prompt-invariant, "
                                                          "but nonsense prompts give a poor basis."),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent", tooltip="Any size: the basis lives in channel space and works at other "
                                                  "resolutions."),
                io.Int.Input("steps", default=50, min=1, max=10000,
                             tooltip="The sampling steps you will use with SVD-Cache."),
                io.Float.Input("cfg", default=3.5, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=False,
                             tooltip="Seed of the calibration noise."),
                io.Int.Input("interval", default=7, min=1, max=100,
                             tooltip="The SVD-Cache interval N you will use: only the steps it computes in full "
                                     "contribute to the basis. Applies only with speed = custom."),
                io.Float.Input("tau", default=0.85, min=0.01, max=1.0, step=0.01,
                               tooltip="Energy share of the principal subspace (rank rule: the smallest k with "
                                       "sum of the top k sigma^2 >= tau of the total), in (0, 1]. Paper: 0.85."),
                io.Int.Input("warmup_steps", default=3, min=0, max=100, optional=True,
                             tooltip="The SVD-Cache warm-up you will use (full steps at the start). Applies "
                                     "only with speed = custom."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler", optional=True),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="simple", optional=True),
                io.Combo.Input("speed", options=list(SPEED_PRESETS), default="auto", optional=True,
                               tooltip="The SVD-Cache speed preset you will use: a preset derives the full steps "
                                       "from `steps` as SVD-Cache will; interval and warmup_steps apply only with "
                                       "custom."),
            ],
            outputs=[SVDBasisType.Output(display_name="basis"), io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, steps, cfg, seed, interval, tau, warmup_steps=3,
                sampler_name="euler", scheduler="simple", speed="custom") -> io.NodeOutput:
        if not 0.0 < float(tau) <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        if speed != "custom":
            interval, warmup_steps = preset_schedule(speed, steps)
        basis, out = calibrate(model, positive, negative, latent, steps, cfg, seed, interval=interval, tau=tau,
                               warmup_steps=warmup_steps, sampler_name=sampler_name, scheduler=scheduler)
        path = os.path.join(register_basis_folder(), basis_filename(basis))
        basis.save(path)
        logging.info(f"SVD-Cache calibration saved {path}")
        return io.NodeOutput(basis, out)


class FastDiTSVDCache(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTSVDCache",
            display_name="SVD-Cache (subspace feature forecast)",
            category="FastDiT/caching",
            description="Speeds up FLUX.1 (dev/Kontext), Qwen-Image(-Edit), HunyuanVideo and Wan without training "
                        "(SVD-Cache, CVPR 2026): every `interval` steps the transformer runs in full; in between, "
                        "each module output is forecast as its last value plus an EMA forecast of its change in "
                        "the principal subspace of a one-time basis (the residual is reused), and attention and "
                        "MLPs are skipped. Needs a basis from '" + CALIBRATION_NODE + "' (connected, or a saved "
                        "file). The speed preset (default auto) scales interval and warm-up to the run's step "
                        "count. Each run logs its full vs forecast steps, cost ratio and cache memory.",
            inputs=[
                io.Model.Input("model"),
                SVDBasisType.Input("basis", optional=True,
                                   tooltip="The output of '" + CALIBRATION_NODE + "'. Takes precedence over "
                                           "basis_file."),
                io.Combo.Input("basis_file", options=_basis_files(), default=NO_FILE, optional=True,
                               tooltip="A basis saved in models/fastdit_svd_bases by the calibration node."),
                io.Int.Input("interval", default=7, min=1, max=100,
                             tooltip="N: a full computation every N steps after warm-up; the steps in between are "
                                     "forecast. 1 = never forecast (identical to the unpatched model). Paper: 5 to "
                                     "8 at 50 steps (4.2x to 6.3x fewer FLOPs). Applies only with speed = custom."),
                io.Float.Input("beta", default=0.3, min=0.0, max=0.99, step=0.01,
                               tooltip="EMA history weight of the principal-coefficient forecast, as in the paper's "
                                       "rule new = beta * old + (1 - beta) * observed. The paper quotes 0.9; on the "
                                       "pack's demo model 0.9 keeps a stale early slope and loses badly, 0.3 measured "
                                       "best (docs/svdcache.md)."),
                io.Combo.Input("ema_mode", options=list(EMA_MODES), default="trend",
                               tooltip="trend = EMA of the per-step slope of the principal coefficients, "
                                       "extrapolated; level = EMA of the coefficients themselves; holt = level + "
                                       "trend (Holt). The paper's text leaves the rule open: see docs/svdcache.md."),
                io.Int.Input("warmup_steps", default=3, min=0, max=100,
                             tooltip="Steps computed in full at the start before any forecast. Applies only "
                                     "with speed = custom."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Forecasting may act from this point of the schedule on."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Forecasting may act until this point of the schedule."),
                io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default="compute", optional=True,
                               tooltip="Where cached features live: the model's device (fast) or cpu (saves GPU "
                                       "memory, slower)."),
                io.Combo.Input("speed", options=list(SPEED_PRESETS), default="auto", optional=True,
                               tooltip=SPEED_TOOLTIP),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, interval, beta, ema_mode, warmup_steps, start_percent, end_percent, basis=None,
                basis_file=NO_FILE, cache_device="compute", speed="custom") -> io.NodeOutput:
        if basis is None:
            if not basis_file or basis_file == NO_FILE:
                raise ValueError(f"SVD-Cache needs a basis: connect '{CALIBRATION_NODE}' to the basis input or "
                                 "pick a saved basis file (models/fastdit_svd_bases)")
            path = folder_paths.get_full_path(BASIS_FOLDER, basis_file)
            basis = SVDBasis.load(path or os.path.join(register_basis_folder(), basis_file))
        if speed != "custom":  # the preset decides; the widgets must not change the run
            interval, warmup_steps = PAPER_INTERVAL, PAPER_WARMUP
        config = SVDCacheConfig(basis=basis, interval=interval, beta=beta, ema_mode=ema_mode,
                                warmup_steps=warmup_steps, start_percent=start_percent, end_percent=end_percent,
                                cache_device=cache_device, speed=speed)
        return io.NodeOutput(apply_svdcache(model, config))
