"""Fresco: progressive-resolution sampling of DiTs ("From Sketch to Fresco", CVPR 2026, arXiv 2601.07462).

`sample_fresco` is a k-diffusion sampler function (ComfyUI's KSAMPLER contract): plain Euler on a
full-resolution carrier latent whose coarse cells hold their coarse values, one model evaluation
per step, one global sigma schedule. A schedule starting below the model's sigma_max (img2img,
denoise < 1) keeps the source latent: cells going to full resolution continue their own state and
take the source's detail back (transition.py). `FrescoRun` holds the run's state (noise field,
cell masks, x0 history, the current token layout) and is dropped when the function returns.
"""
import logging
import math
from collections import deque

import torch
from tqdm.auto import trange

from ..adapters import UnsupportedInputError
from .cost import cost_line
from .forward import LAYOUT_KEY, WRAPPER_KEY, mixed_adapter, mixed_resolution_wrapper
from .layout import CellGrid, MixedLayout, as5d
from .noise_field import NoiseField, coarse_start
from .selection import edge_score, random_score, select, variance_score
from .stages import FrescoOptions, StagePlan
from .transition import same_t, snr_matched

log = logging.getLogger("FastDiT")


def check_conditioning(conds, where="Fresco"):
    """Refuse what is defined on the full-resolution grid: areas and masks (comfy/samplers.py,
    process_conds, sizes them to the latent once), ControlNet residuals, concatenated latents.
    `conds`: cond dicts (a CONDITIONING's extras, or ComfyUI's processed conds)."""
    for c in conds:
        if c.get("area") is not None or c.get("mask") is not None:
            raise UnsupportedInputError(f"{where} cannot use area or mask conditioning (ConditioningSetArea / "
                                        "ConditioningSetMask): it is resolved on the full-resolution grid.")
        if c.get("control") is not None:
            raise UnsupportedInputError(f"{where} cannot use ControlNet: its residuals assume the full token grid.")
        model_conds = c.get("model_conds") or {}
        if "c_concat" in model_conds or c.get("concat_latent_image") is not None:
            raise UnsupportedInputError(f"{where} cannot use models or conditioning that concatenate a latent to "
                                        "the input (inpainting / Fill / depth-concat models).")


def preflight(model, x, extra_args):
    """Clear errors for what Fresco cannot sample, before the first model call; returns the family
    adapter and the sampler's noise (the unified field)."""
    import comfy.model_sampling
    guider = model.inner_model
    base = guider.inner_model
    if not isinstance(base.model_sampling, comfy.model_sampling.CONST):
        raise UnsupportedInputError("Fresco needs a rectified-flow model (FLUX, Qwen-Image, HunyuanVideo).")
    if extra_args.get("denoise_mask") is not None:
        raise UnsupportedInputError("Fresco cannot inpaint: remove the latent's noise_mask (Set Latent Noise Mask).")
    if getattr(x, "is_nested", False):
        raise UnsupportedInputError("Fresco cannot sample nested (multi-modal) latents.")
    check_conditioning([c for cs in getattr(guider, "conds", {}).values() for c in cs])
    if "easycache" in extra_args.get("model_options", {}).get("transformer_options", {}):
        raise UnsupportedInputError(
            "Fresco cannot run under ComfyUI's EasyCache / LazyCache: they compare the full-size latent, which "
            "Fresco keeps through its resolution changes, and would reuse a model output across them. "
            "Stack FastDiT's HiCache instead (its caches follow the token set).")
    if extra_args.get("model_options", {}).get("context_handler") is not None:
        raise UnsupportedInputError(
            "Fresco cannot run under ComfyUI's context windows: each window is a slice of the latent, while "
            "Fresco's token layout covers the whole latent. Remove the context-windows node or sample with a "
            "normal KSampler.")
    noise = getattr(model, "noise", None)
    if noise is None or noise.shape != x.shape:
        raise UnsupportedInputError("Fresco must run through ComfyUI's KSAMPLER, which provides its noise.")
    return mixed_adapter(base.diffusion_model), noise


def img2img_source(model, x, sigmas):
    """The latent being denoised when the schedule starts below the model's sigma_max (img2img,
    denoise < 1: x = s E + (1 - s) L), as 5-D; None from pure noise.

    The coarse stages hold only the block means of L; cells going up continue their own state and
    take L's Haar details back (transition.py), so the source's detail survives."""
    latent = getattr(model, "latent_image", None)   # set by ComfyUI's KSAMPLER
    if latent is None or latent.shape != x.shape:
        return None
    sigma_max = float(model.inner_model.inner_model.model_sampling.sigma_max)
    first = float(sigmas[0])
    if math.isclose(first, sigma_max, rel_tol=1e-5) or first > sigma_max:   # KSAMPLER's max_denoise
        return None
    return as5d(latent).to(x)


class FrescoRun:
    """State of one Fresco sampling run."""

    def __init__(self, model, x, sigmas, extra_args, options):
        self.adapter, noise = preflight(model, x, extra_args)
        self.options = options
        self.grid = CellGrid.of(x.shape, options.factor)
        self.plan = StagePlan.for_steps(len(sigmas) - 1, options)
        if self.grid.cells == 0:
            self.plan = StagePlan(0, 0, len(sigmas) - 1, 0.0, 0.0)   # too small for one cell
        self.field = NoiseField(as5d(noise).to(x), extra_args.get("seed"))
        self.source = img2img_source(model, x, sigmas)                 # None when sampling from pure noise
        if self.source is not None and options.transition == "snr_matched" and self.plan.coarse:
            log.warning("Fresco: SNR-matched transitions raise the noise level above the img2img start "
                        "(sigma %.3f) at every resolution change, so less of the source survives than with "
                        "same-t (docs/fresco.md, img2img).", float(sigmas[0]))
        self.history = deque(maxlen=options.variance_window)        # coarse x0 estimates (selection)
        self.x0 = None
        self.up = None
        self.changes = [0] * x.shape[0]                               # resolution changes per sample
        self.layouts = []
        self.sigmas = sigmas.clone()                                  # the schedule the model sees
        self.extra_args = dict(extra_args, model_options=self._model_options(extra_args.get("model_options", {})))
        self.transformer_options = self.extra_args["model_options"]["transformer_options"]

    def _model_options(self, model_options):
        """This run's copy of model_options: the mixed-resolution wrapper and the schedule."""
        import comfy.patcher_extension as pe
        copied = pe.copy_nested_dicts(model_options)
        copied.setdefault("transformer_options", {})["sample_sigmas"] = self.sigmas
        pe.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, mixed_resolution_wrapper, copied,
                                is_model_options=True)
        return copied

    # -- layout ---------------------------------------------------------------------------------
    def _set_layout(self, up, stage):
        self.up = up
        layout = MixedLayout(self.adapter, self.grid, up, self.options.positions, stage)
        self.layouts.append(layout)
        self.transformer_options[LAYOUT_KEY] = layout

    @property
    def layout(self):
        return self.layouts[-1]

    def start(self, x):
        """The carrier at sigmas[0]: coarse cells hold the coarse RF state with field noise."""
        if self.plan.coarse == 0:
            self._set_layout(None, 3)
            return x
        up = torch.zeros((x.shape[0], *self.grid.cell_shape), dtype=torch.bool, device=x.device)
        x5 = as5d(x)
        z = coarse_start(x5, self.field.field, float(self.sigmas[0]), self.grid)
        self._set_layout(up, 1)
        return self.grid.merge(x5, self.grid.spread(z), up).view(x.shape)

    # -- one step -------------------------------------------------------------------------------
    def enter_step(self, i, x):
        """Upsample cells due before step i; returns (carrier, sigma)."""
        sigma = self.sigmas[i]
        if self.up is None or self.layout.all_fine or self.plan.stage(i) == 1:
            return x, sigma
        stage = self.plan.stage(i)
        target = round(self.plan.fine_share(i) * self.grid.cells)
        new_up = torch.ones_like(self.up) if stage == 3 else select(self.up, self._score(i), target)
        changed = (new_up != self.up).flatten(1).any(1)               # per sample
        if not bool(changed.any()):
            return x, sigma
        x5 = as5d(x)
        fine_before = self.grid.fine_pixels(self.up)
        new_pixels = self.grid.fine_pixels(new_up) & ~fine_before
        noise = self.field.field if self.options.renoise == "unified" else self.field.fresh(self.changes)
        s = float(sigma)
        if self.options.transition == "same_t":
            x5, s = same_t(self.grid, x5, new_pixels, s, as5d(self.x0), noise, self.options.expansion,
                           self.source, self.field.field)
        else:
            moved, s = snr_matched(self.grid, x5, new_pixels, fine_before, s, noise, self.options.expansion,
                                   self.options.renoise, self.source)
            x5, sigma = self._jump(i, x5, moved, s, changed)
        self.changes = [k + int(c) for k, c in zip(self.changes, changed.tolist())]
        self._set_layout(new_up, stage)
        return x5.reshape(x.shape), sigma

    def _jump(self, i, x5, moved, s, changed):
        """SNR-matched: the samples whose cells changed move to `s`, the others stay at sigmas[i].
        Returns (carrier, sigma): one sigma, or one per sample where they differ; the schedule the
        model sees keeps the first sample's (caches read the first row's sigma)."""
        if bool(changed.all()):
            self.sigmas[i] = s
            return moved, self.sigmas[i]
        per_sample = torch.where(changed.to(self.sigmas.device), self.sigmas.new_tensor(s), self.sigmas[i])
        self.sigmas[i] = per_sample[0]
        return torch.where(changed.view(-1, 1, 1, 1, 1), moved, x5), per_sample.to(x5.device)

    def _score(self, i):
        choice = self.options.selection
        if choice == "variance" and len(self.history) >= 2:
            return variance_score(list(self.history), self.options.variance_statistic)
        if choice == "random":
            seeds = self.field.sample_seeds(self.field.seed * 7919 + i)
            return random_score(self.grid.cell_shape, seeds, self.up.device)
        return edge_score(self.history[-1])   # "edge", or variance with a single estimate so far

    def observe(self, denoised):
        self.x0 = denoised
        if not self.layout.all_fine:
            self.history.append(self.grid.coarse(as5d(denoised)).float())

    def summary(self):
        return cost_line(self)


@torch.no_grad()
def sample_fresco(model, x, sigmas, extra_args=None, callback=None, disable=None, options=None):
    """Fresco progressive-resolution Euler (Fresco, CVPR 2026): start from the
    coarse sketch of the unified noise field, upsample the cells whose x0 estimate has converged
    (Haar/Hadamard expansion with the field's detail noise), finish at full resolution."""
    extra_args = {} if extra_args is None else extra_args
    run = FrescoRun(model, x, sigmas, extra_args, options or FrescoOptions().validated())
    s_in = x.new_ones([x.shape[0]])
    x = run.start(x)
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma = run.enter_step(i, x)
        denoised = model(x, sigma * s_in, **run.extra_args)
        run.observe(denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma.ndim:                                   # one sigma per sample (an SNR-matched jump)
            sigma = sigma.view(-1, *[1] * (x.ndim - 1))
        x = x + (x - denoised) / sigma * (sigmas[i + 1] - sigma)
    log.info(run.summary())
    return x


def fresco_sampler(options):
    """A ComfyUI SAMPLER running Fresco with `options` (FrescoOptions)."""
    import comfy.samplers
    return comfy.samplers.KSAMPLER(sample_fresco, extra_options={"options": options})
