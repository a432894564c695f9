"""Fresco behind a KSampler-style call: sigmas from the model's schedule, the seed's noise as the
unified field, previews and progress per model evaluation, through ComfyUI's own sampling path."""
import inspect

from .fresco import check_conditioning, fresco_sampler
from .forward import mixed_adapter


def _fix_empty_latent(model, latent):
    import comfy.sample
    fix = comfy.sample.fix_empty_latent_channels
    params = inspect.signature(fix).parameters
    extra = {k: latent[k] for k in ("downscale_ratio_spacial", "downscale_ratio_temporal") if k in params and k in latent}
    return fix(model, latent["samples"], **extra)


def denoise_sigmas(model, scheduler, steps, denoise=1.0):
    """The sigmas ComfyUI's KSampler runs for `denoise` (comfy.samplers.KSampler.set_steps): the
    whole schedule of `steps` at 1, else the last `steps` + 1 sigmas of int(steps / denoise) steps;
    empty at 0 (nothing to sample)."""
    import comfy.samplers
    import torch
    if not 0.0 <= denoise <= 1.0:
        raise ValueError(f"Fresco denoise must be between 0 and 1, not {denoise}")
    model_sampling = model.get_model_object("model_sampling")
    if denoise > 0.9999:
        return comfy.samplers.calculate_sigmas(model_sampling, scheduler, steps).cpu()
    if denoise <= 0.0:
        return torch.zeros(0)
    return comfy.samplers.calculate_sigmas(model_sampling, scheduler, int(steps / denoise)).cpu()[-(steps + 1):]


def fresco_ksample(model, seed, steps, cfg, scheduler, positive, negative, latent, options, denoise=1.0):
    """Sample `latent` (full resolution in, full resolution out) with Fresco; returns the LATENT dict.
    `denoise` < 1: img2img from `latent`, as KSampler's denoise."""
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview
    from ..adapters import UnsupportedInputError
    mixed_adapter(model)
    if latent.get("noise_mask") is not None:
        raise UnsupportedInputError("Fresco cannot inpaint: remove the latent's noise_mask (Set Latent Noise Mask).")
    check_conditioning([extras for cond in (positive, negative) for _, extras in cond])
    samples = _fix_empty_latent(model, latent)
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    sigmas = denoise_sigmas(model, scheduler, steps, denoise)
    result = latent.copy()
    result.pop("downscale_ratio_spacial", None)
    result.pop("downscale_ratio_temporal", None)
    if len(sigmas) < 2:        # denoise 0: nothing to sample, the latent comes back as it is
        result["samples"] = samples
        return result
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    out = comfy.sample.sample_custom(model, noise, cfg, fresco_sampler(options), sigmas, positive, negative, samples,
                                     callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    result["samples"] = out
    return result
