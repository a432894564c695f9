"""FastDiTTestModel: a tiny random-weight model of a supported family, ready to sample.

For smoke-testing graphs and the pack's techniques on any machine without downloading weights;
the images it makes are noise-like patterns, not pictures."""
import torch
from comfy_api.latest import io

from ..demo.latent_space import LinearPatchVAE
from ..fastdit.testing import tiny_models

VIDEO_FAMILIES = ("hunyuan_video", "wan")
EDIT_FAMILIES = ("flux_kontext", "qwen_image_edit")
MAX_FRAMES = 64


def _family_frames_error(family: str | None, frames: int | None) -> str | None:
    """What is wrong with this family / frames pair, or None (None values are not checked).

    validate_inputs names these two inputs, so ComfyUI leaves their option and range checks to it."""
    if family is not None and family not in tiny_models.FAMILIES:
        return f"family must be one of {', '.join(tiny_models.FAMILIES)}, not {family!r}"
    if frames is not None and not 1 <= frames <= MAX_FRAMES:
        return f"frames must be between 1 and {MAX_FRAMES}, not {frames}"
    if family is not None and frames is not None and frames > 1 and family not in VIDEO_FAMILIES:
        return f"frames > 1 needs a video family ({', '.join(VIDEO_FAMILIES)}); {family} makes images"
    return None


class FastDiTTestModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTTestModel",
            display_name="Tiny test model (random weights)",
            category="FastDiT/testing",
            description="Builds a tiny model of the real ComfyUI class for a model family, with random "
                        "weights, plus matching conditioning, an empty latent and a lossless 2x2-patch "
                        "VAE. Use it to check that a graph runs; it draws no meaningful images.",
            inputs=[
                io.Combo.Input("family", options=list(tiny_models.FAMILIES), default="flux"),
                io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, tooltip="Seed of the random weights."),
                io.Int.Input("width", default=16, min=2, max=512, step=2, tooltip="Latent width (image width / 2)."),
                io.Int.Input("height", default=16, min=2, max=512, step=2, tooltip="Latent height (image height / 2)."),
                io.Int.Input("frames", default=1, min=1, max=MAX_FRAMES,
                             tooltip="Latent frames (video families only)."),
                io.Int.Input("batch_size", default=1, min=1, max=64),
            ],
            outputs=[io.Model.Output(), io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative"), io.Latent.Output(), io.Vae.Output()],
        )

    @classmethod
    def validate_inputs(cls, family=None, frames=None):
        # Only the inputs checked together are named: ComfyUI still checks seed, width, height and
        # batch_size itself. A linked input arrives as None here and is checked in execute.
        return _family_frames_error(family, frames) or True

    @classmethod
    def execute(cls, family, seed, width, height, frames, batch_size) -> io.NodeOutput:
        error = _family_frames_error(family, frames)
        if error:
            raise ValueError(error)
        model = tiny_models.make_model(family, seed)
        ref = tiny_models.reference_latent(family, height, width, seed + 1) if family in EDIT_FAMILIES else None
        positive = tiny_models.conditioning(family, seed + 2, reference=ref)
        negative = tiny_models.conditioning(family, seed + 3, reference=ref)
        latent = {"samples": torch.zeros(tiny_models.latent_shape(family, height, width, frames, batch_size))}
        vae = LinearPatchVAE(latent_dims=2 if family in ("flux", "flux_kontext") else 3)
        return io.NodeOutput(model, positive, negative, latent, vae)
