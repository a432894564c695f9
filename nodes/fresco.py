"""Fresco dynamic-resolution sampling: a KSampler node and a SAMPLER for SamplerCustomAdvanced."""
import comfy.samplers
from comfy_api.latest import io

from ..fastdit.dynres.fresco import fresco_sampler
from ..fastdit.dynres.ksampler import fresco_ksample
from ..fastdit.dynres.stages import EXPANSIONS, PRESETS, RENOISES, SELECTIONS, TRANSITIONS, parse_split, preset_options

CATEGORY = "FastDiT/dynamic-resolution"
TRANSITION_CHOICES = {"same-t": TRANSITIONS[0], "SNR-matched": TRANSITIONS[1]}  # shown -> option
COARSE_FACTOR_CHOICES = ["2", "4"]
PRESET_NAMES = [*PRESETS, "custom"]
_PRESET_HELP = "; ".join(f"{p.label}: split {'/'.join(map(str, p.split))} (reported {p.reported}x at {p.nfe} steps)"
                         for p in PRESETS.values())


def _option_inputs():
    return [
        io.Combo.Input("preset", options=PRESET_NAMES, default="balanced",
                       tooltip="Stage layout by target speed, against a 50-step full-resolution sampler at the "
                               f"paper's step counts ({_PRESET_HELP}). The split scales to any number of steps; "
                               "the node logs the cost ratio it reaches. 'custom' uses the four knobs below."),
        io.String.Input("stage_split", default="5/6/7",
                        tooltip="custom: proportions of coarse / progressive / full-resolution steps, e.g. 5/6/7."),
        io.Combo.Input("coarse_factor", options=COARSE_FACTOR_CHOICES, default="2",
                       tooltip="custom: downsampling per axis of the coarse stage (4 only where the model "
                               "tolerates a 16x smaller sketch)."),
        io.Float.Input("first_upsample", default=0.3, min=0.0, max=1.0, step=0.01,
                       tooltip="custom: share of the image upsampled at the first progressive step."),
        io.Float.Input("upsample_per_step", default=0.1, min=0.0, max=1.0, step=0.01,
                       tooltip="custom: share added at each further progressive step (the rest goes up when "
                               "the full-resolution stage starts)."),
        io.Combo.Input("selection", options=list(SELECTIONS), default="variance",
                       tooltip="Which regions go to full resolution first. variance: the most converged x0 "
                               "estimate (the paper's); random, edge: ablations."),
        io.Combo.Input("renoise", options=list(RENOISES), default="unified",
                       tooltip="Noise of newly upsampled pixels. unified: the seed's own noise field (the "
                               "paper's); independent: fresh noise (ablation)."),
        io.Combo.Input("expansion", options=list(EXPANSIONS), default="hadamard",
                       tooltip="hadamard: Haar/Hadamard sub-token expansion (the paper's); interpolate: "
                               "bilinear upsampling of the coarse estimate (ablation)."),
        io.Combo.Input("transition", options=list(TRANSITION_CHOICES), default="same-t",
                       tooltip="same-t: new pixels are exact states at the current noise level; SNR-matched: "
                               "jump to the noise level that keeps the signal-to-noise ratio (pyramidal flow)."),
    ]


def _options(preset, stage_split, coarse_factor, first_upsample, upsample_per_step, selection, renoise, expansion,
             transition):
    # ComfyUI 0.3.75 does not check V3 combo values against their options; newer versions do.
    # preset, selection, renoise and expansion are checked by preset_options.
    for name, value, choices in (("transition", transition, TRANSITION_CHOICES),
                                 ("coarse_factor", coarse_factor, COARSE_FACTOR_CHOICES)):
        if value not in choices:
            raise ValueError(f"Fresco {name} must be one of {', '.join(choices)}, not {value!r}")
    knobs = dict(selection=selection, renoise=renoise, expansion=expansion, transition=TRANSITION_CHOICES[transition])
    if preset == "custom":
        knobs.update(split=parse_split(stage_split), factor=int(coarse_factor), first_ratio=first_upsample,
                     ratio_per_step=upsample_per_step)
    return preset_options(preset, **knobs)


class _FrescoOptionsNode(io.ComfyNode):
    @classmethod
    def validate_inputs(cls, stage_split=None):   # only this input is named: ComfyUI checks every other one
        if isinstance(stage_split, str):  # a linked split arrives as None and is parsed when the node runs
            try:
                parse_split(stage_split)
            except ValueError as e:
                return str(e)
        return True


class FastDiTFrescoKSampler(_FrescoOptionsNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTFrescoKSampler",
            display_name="KSampler (Fresco dynamic resolution)",
            category=CATEGORY,
            description="Samples a DiT (FLUX, Qwen-Image, HunyuanVideo) coarse-to-fine: a low-resolution sketch "
                        "first, then the regions whose estimate has converged go to full resolution, with one "
                        "noise field per seed across scales. Output at the input latent's full resolution.",
            inputs=[
                io.Model.Input("model"),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True),
                io.Int.Input("steps", default=18, min=1, max=10000,
                             tooltip="Model evaluations in total (every stage counts)."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="simple",
                               tooltip="Sigma schedule of the model (its full-resolution shift), shared by all "
                                       "stages."),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent_image", tooltip="Full-resolution latent; the coarse stage is taken from it."),
                *_option_inputs(),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="As KSampler's: the share of the schedule to run (its last steps of "
                                       "steps / denoise). Below 1 the latent is partly noised and kept: cells "
                                       "going to full resolution take the source's own detail back."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, seed, steps, cfg, scheduler, positive, negative, latent_image, denoise=1.0,
                **knobs) -> io.NodeOutput:
        return io.NodeOutput(fresco_ksample(model, seed, steps, cfg, scheduler, positive, negative, latent_image,
                                            _options(**knobs), denoise))


class FastDiTFrescoSampler(_FrescoOptionsNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTFrescoSampler",
            display_name="Fresco dynamic-resolution sampler",
            category=CATEGORY,
            description="Fresco as a SAMPLER for SamplerCustomAdvanced / SamplerCustom: works with any guider "
                        "and the sigmas of any scheduler node; one model evaluation per sigma step.",
            inputs=_option_inputs(),
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, **knobs) -> io.NodeOutput:
        return io.NodeOutput(fresco_sampler(_options(**knobs)))
