"""Fresco rows: the presets at the step counts of their operating points, and the ablations.

    fresco                               balanced preset, 18 steps
    fresco:preset=quality                30 steps; fast: 9 steps
    fresco:preset=balanced,selection=random     (also edge; renoise=independent;
                                                 expansion=interpolate; transition=snr_matched;
                                                 positions=fine|coarse_centred; factor=4)
    fresco:preset=custom,split=0/0/1,steps=18   every cell fine from step 0: plain Euler, 18 steps
    fresco:stack=hicache                 another configuration's model patch (its defaults) under Fresco

`steps` overrides the preset's step count; a custom split without `steps` uses the bench's.
"""
from . import Config, register


@register("fresco")
def fresco(preset="balanced", steps=None, stack=None, **options):
    from fastdit.dynres.fresco import fresco_sampler
    from fastdit.dynres.stages import PRESETS, parse_split, preset_options
    if "split" in options:
        options["split"] = parse_split(options["split"])
    sampler = fresco_sampler(preset_options(preset, **options))
    preset_steps = steps or (PRESETS[preset].nfe if preset in PRESETS else None)

    def sample(model, noise, positive, negative, latent, bench_steps, cfg, seed):
        return sample_fresco(model, noise, cfg, sampler, preset_steps or bench_steps, positive, negative, latent, seed)
    prepare = None
    if stack:
        from . import build
        prepare = build(stack).prepare
    return Config("fresco", prepare=prepare, sample=sample)


def sample_fresco(model, noise, cfg, sampler, steps, positive, negative, latent, seed):
    """One run of a Fresco SAMPLER over `steps` sigmas of the model's simple schedule -> latent."""
    import comfy.sample
    import comfy.samplers
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).cpu()
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                      disable_pbar=True, seed=seed)
