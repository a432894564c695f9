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


def fresco_ksample(model, seed, steps, cfg, scheduler, positive, negative, latent, options):
    """Sample `latent` (full resolution in, full resolution out) with Fresco; returns the LATENT dict."""
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
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).cpu()
    callback = latent_preview.prepare_callback(model, steps)
    out = comfy.sample.sample_custom(model, noise, cfg, fresco_sampler(options), sigmas, positive, negative, samples,
                                     callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    result = latent.copy()
    result.pop("downscale_ratio_spacial", None)
    result.pop("downscale_ratio_temporal", None)
    result["samples"] = out
    return result
