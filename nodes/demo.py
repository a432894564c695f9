"""The demo models as ComfyUI nodes: load a model, encode a prompt, draw the prompt's exact scene.

With these, the standard graphs (KSampler / SamplerCustomAdvanced / VAEDecode / ReferenceLatent /
SaveImage) and every technique of the pack run on the small trained demo models, on any machine,
with no downloads."""
from comfy_api.latest import io

from ..demo import models, world
from ..demo.models import cached as cached_model

DEMO_MODELS = list(models.WEIGHT_FILES)


def _demo_model(model_name: str):
    # ComfyUI 0.3.75 does not check V3 combo values against their options; newer versions do.
    if model_name not in DEMO_MODELS:
        raise ValueError(f"model_name must be one of {', '.join(DEMO_MODELS)}, not {model_name!r}")
    return cached_model(model_name)


class FastDiTDemoLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTDemoLoader",
            display_name="Load demo model",
            category="FastDiT/demo",
            description="Loads a small FLUX.1-architecture model shipped with the pack and trained on its "
                        "demo world of coloured shapes: demo-flux (text to image) or demo-kontext (edits, "
                        "with the source image as a ReferenceLatent). Returns the MODEL and its VAE (a "
                        "lossless 2x2-pixel patch latent: image size = 2 x latent size).",
            inputs=[io.Combo.Input("model_name", options=DEMO_MODELS, default="demo-flux")],
            outputs=[io.Model.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        return io.NodeOutput(_demo_model(model_name).patcher(), models.vae())


class FastDiTDemoTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTDemoTextEncode",
            display_name="Demo text encode",
            category="FastDiT/demo",
            description="Encodes a prompt of the demo world for a demo model. Scenes: 1-3 objects, e.g. "
                        "'a small red circle at the top left, a large blue square at the center, on a white "
                        "background'. Edits (demo-kontext): 'make the red circle blue', 'remove the square', "
                        "'move the green triangle left' (naming the target's colour is optional but helps). "
                        "An empty prompt is the unconditional (negative) prompt.",
            inputs=[
                io.Combo.Input("model_name", options=DEMO_MODELS, default="demo-flux",
                               tooltip="The demo model whose learned text embedding to use."),
                io.String.Input("prompt", multiline=True, default="a large red circle at the center, on a white background",
                                tooltip="Colours: " + ", ".join(world.COLORS) + ". Shapes: " + ", ".join(world.SHAPES)
                                + ". Sizes: " + ", ".join(world.SIZES) + ". Positions: " + ", ".join(world.POSITIONS)
                                + ". Backgrounds: " + ", ".join(world.BACKGROUND_COLORS) + " (flat or "
                                "'<colour> to <colour> vertical|horizontal gradient')."),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        # Only the prompt is named, so ComfyUI's own check of model_name stays on (where ComfyUI checks
        # V3 combos at all; execute checks it too).
        if prompt is None:  # linked: checked when the node runs
            return True
        from ..demo import text
        try:
            text.tokens_for(prompt)
        except world.PromptError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model_name, prompt) -> io.NodeOutput:
        return io.NodeOutput(_demo_model(model_name).conditioning(prompt))


class FastDiTDemoScene(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTDemoScene",
            display_name="Demo scene (exact render)",
            category="FastDiT/demo",
            description="Draws the exact image of a demo-world prompt, e.g. as the source image of an edit "
                        "or as ground truth. With an edit instruction, also draws the edited scene and the mask "
                        "of the pixels the edit must leave unchanged.",
            inputs=[
                io.String.Input("prompt", multiline=True, default="a large red circle at the center, on a white background"),
                io.Int.Input("width", default=64, min=8, max=2048, step=2),
                io.Int.Input("height", default=64, min=8, max=2048, step=2),
                io.String.Input("edit", default="", tooltip="Optional edit instruction, e.g. 'make the red circle blue'."),
            ],
            outputs=[io.Image.Output(display_name="image"), io.Image.Output(display_name="edited"),
                     io.Mask.Output(display_name="unedited_mask")],
        )

    @classmethod
    def validate_inputs(cls, prompt=None, edit=None):
        # Only the two texts are named: ComfyUI still checks width and height against their range.
        # A linked text arrives as None and is checked when the node runs.
        try:
            scene = world.parse(prompt) if prompt is not None else None
            if edit is not None and edit.strip():
                instruction = world.parse_edit(edit)
                if scene is not None:
                    instruction.apply(scene)
        except ValueError as e:  # world.PromptError included
            return str(e)
        return True

    @classmethod
    def execute(cls, prompt, width, height, edit="") -> io.NodeOutput:
        scene = world.parse(prompt)
        target = world.parse_edit(edit).apply(scene) if edit.strip() else scene
        return io.NodeOutput(world.render(scene, height, width), world.render(target, height, width),
                             world.unedited_mask(scene, target, height, width)[None])
