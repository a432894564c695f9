"""SpecEdit: a draft node (low-resolution edit preview + discrepancy mask) and a verify node
(refine only the edited tokens at full resolution, the rest locked to the source)."""
import comfy.samplers
from comfy_api.latest import io

from ..fastdit.dynres.layout import POSITION_MODES
from ..fastdit.specedit.options import FACTORS, MEASURES, RESOLUTIONS, RING_MODES, DraftOptions, VerifyOptions
from ..fastdit.specedit.sampler import run_draft, run_verify

CATEGORY = "FastDiT/dynamic-resolution"
SpecEditDraftType = io.Custom("SPECEDIT_DRAFT")
FACTOR_CHOICES = [str(f) for f in FACTORS]
DEFAULT_RESOLUTION = DraftOptions.resolution
DEFAULT_RING = VerifyOptions.ring


class FastDiTSpecEditDraft(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTSpecEditDraft",
            display_name="SpecEdit draft (low-res edit preview)",
            category=CATEGORY,
            description="Runs the first steps of an edit (FLUX.1 Kontext, Qwen-Image-Edit) at low resolution, target "
                        "and reference image alike (at full resolution on small images: see resolution), and compares the draft's predicted image with the source per "
                        "token. Feed the draft to 'SpecEdit verify', which refines only what the edit changes.",
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive", tooltip="The edit instruction carrying the source image as a "
                                                          "reference latent (ReferenceLatent, TextEncodeQwenImageEdit)."),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent", tooltip="The output latent: the reference image's size."),
                io.Vae.Input("vae", tooltip="Decodes the draft preview; the 'vae' discrepancy reads its decoder."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True),
                io.Int.Input("steps", default=10, min=2, max=10000,
                             tooltip="Steps of the whole edit (draft + verify), on one sigma schedule."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="simple"),
                io.Float.Input("draft_fraction", default=0.2, min=0.05, max=0.95, step=0.05,
                               tooltip="Share of the steps run as the draft."),
                io.Combo.Input("coarse_factor", options=FACTOR_CHOICES, default="2",
                               tooltip="Downsampling per axis of the draft and of locked regions."),
                io.Combo.Input("discrepancy", options=list(MEASURES), default="vae",
                               tooltip="How the draft is compared with the source per token. vae: the VAE "
                                       "decoder's first feature maps (channel-normalised), or the decoded pixels "
                                       "for VAEs without a convolutional decoder; latent: squared latent distance."),
                io.Combo.Input("resolution", options=list(RESOLUTIONS), default=DEFAULT_RESOLUTION, optional=True,
                               tooltip="Tokens of the draft's steps. auto: coarse when the coarse grid has at least "
                                       "16 cells per side (a 64x64 latent at coarse factor 2, i.e. 512x512 pixels "
                                       "with FLUX's VAE), else full; full: the edit's own first steps (the outcome "
                                       "follows the full edit's; locked regions go coarse only in verify); coarse: "
                                       "target and reference at 1/coarse_factor per axis (cheaper; on small images "
                                       "it can change the edit's outcome)."),
            ],
            outputs=[SpecEditDraftType.Output(display_name="draft"),
                     io.Image.Output(display_name="preview", tooltip="The draft's predicted clean image."),
                     io.Mask.Output(display_name="discrepancy", tooltip="Per-token difference between the draft "
                                                                         "and the source (0..1, clipped).")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, vae, seed, steps, cfg, scheduler, draft_fraction,
                coarse_factor, discrepancy, resolution=DEFAULT_RESOLUTION) -> io.NodeOutput:
        if str(coarse_factor) not in FACTOR_CHOICES:
            raise ValueError(f"SpecEdit coarse_factor must be one of {', '.join(FACTOR_CHOICES)}, not {coarse_factor!r}")
        options = DraftOptions(draft_fraction, int(coarse_factor), discrepancy, resolution)
        draft, image, mask = run_draft(model, positive, negative, latent, vae, seed, steps, cfg, options, scheduler)
        return io.NodeOutput(draft, image, mask)


class FastDiTSpecEditVerify(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTSpecEditVerify",
            display_name="SpecEdit verify (refine edited tokens)",
            category=CATEGORY,
            description="Continues a SpecEdit draft: the tokens the edit changes (plus a margin and a sparse "
                        "coverage grid) go to full resolution; the others stay coarse and follow the source, which "
                        "is pasted back there with a blended boundary. A global edit runs everything at full "
                        "resolution.",
            inputs=[
                io.Model.Input("model", tooltip="The draft's model (patches such as HiCache may be added)."),
                SpecEditDraftType.Input("draft"),
                io.Float.Input("threshold", default=0.015, min=0.0, max=10.0, step=0.005,
                               tooltip="A token is edited where the discrepancy is at least this."),
                io.Float.Input("budget", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Above 0: refine this share of the tokens (the most changed) instead of "
                                       "using the threshold."),
                io.Int.Input("coverage_stride", default=4, min=0, max=64,
                             tooltip="Also refine one region in every stride x stride block (global structure); "
                                     "0 = off."),
                io.Int.Input("dilation", default=1, min=0, max=16, tooltip="Margin around edited regions, in cells."),
                io.Float.Input("boundary_blend", default=0.8, min=0.0, max=1.0, step=0.05,
                               tooltip="Refined cells next to locked ones become blend * source + (1 - blend) * "
                                       "edit (0 = no blending)."),
                io.Combo.Input("positions", options=list(POSITION_MODES), default="fine",
                               tooltip="RoPE positions of the mixed tokens. fine: refined tokens at their own "
                                       "full-resolution positions, locked coarse ones at the centre of their "
                                       "cells; coarse / coarse_centred: coarse-grid units (Fresco's convention)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Overrides the draft's discrepancy (any size of the image's aspect ratio): "
                                      "the threshold then selects from it; a painted 0/1 mask selects its cells."),
                io.Combo.Input("ring", options=list(RING_MODES), default=DEFAULT_RING, optional=True,
                               tooltip="Which refined cells next to locked ones are blended towards the source. "
                                       "unchanged: only those the edit left within the threshold of the source "
                                       "(a cell the edit changed, e.g. an object's edge, keeps the edit); all: "
                                       "every one."),
            ],
            outputs=[io.Latent.Output(), io.Mask.Output(display_name="refined",
                                                        tooltip="The tokens computed at full resolution.")],
        )

    @classmethod
    def execute(cls, model, draft, threshold, budget, coverage_stride, dilation, boundary_blend, positions="fine",
                mask=None, ring=DEFAULT_RING) -> io.NodeOutput:
        options = VerifyOptions(threshold, budget, coverage_stride, dilation, boundary_blend, positions=positions,
                                ring=ring)
        latent, refined, _ = run_verify(model, draft, options, mask)
        return io.NodeOutput(latent, refined)
