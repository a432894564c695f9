"""FastDiTTestModel: a tiny random-weight model of a supported family, ready to sample, and
FastDiTTestControlNet: a tiny random-weight FLUX ControlNet for it.

For smoke-testing graphs and the pack's techniques on any machine without downloading weights;
the images it makes are noise-like patterns, not pictures."""
from comfy_api.latest import io

from ..fastdit.testing import tiny_models


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
                io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, control_after_generate=False,
                             tooltip="Seed of the random weights (the UI keeps it after a run: same seed, same model)."),
                io.Int.Input("width", default=16, min=2, max=512, step=2, tooltip="Latent width (image width / 2)."),
                io.Int.Input("height", default=16, min=2, max=512, step=2, tooltip="Latent height (image height / 2)."),
                io.Int.Input("frames", default=1, min=1, max=tiny_models.MAX_FRAMES,
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
        return tiny_models.family_frames_error(family, frames) or True

    @classmethod
    def execute(cls, family, seed, width, height, frames, batch_size) -> io.NodeOutput:
        model, positive, negative, latent, vae = tiny_models.graph_inputs(family, seed, width, height, frames,
                                                                          batch_size)
        return io.NodeOutput(model, positive, negative, latent, vae)


class FastDiTTestControlNet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTTestControlNet",
            display_name="Tiny test ControlNet (random weights)",
            category="FastDiT/testing",
            description="Builds ComfyUI's FLUX ControlNet (XLabs layout) at the width of the tiny FLUX test "
                        "model, with seeded random weights, for Apply ControlNet. Use it to check that a graph "
                        "with a ControlNet runs (ComfyUI's ControlNet loader detects full-size FLUX layouts only).",
            inputs=[io.Int.Input("seed", default=7, min=0, max=2 ** 31 - 1, control_after_generate=False,
                                 tooltip="Seed of the random weights.")],
            outputs=[io.ControlNet.Output()],
        )

    @classmethod
    def execute(cls, seed) -> io.NodeOutput:
        return io.NodeOutput(tiny_models.tiny_controlnet(seed))
