"""The demo models: small FLUX.1-architecture transformers (comfy.ldm.flux) trained on the demo world.

A demo model is a comfy `Flux` diffusion model built through `comfy.supported_models.Flux` (so it
samples with FLUX's own model sampling and latent format), plus its text encoder (demo/text.py)
and position embedding (demo/position.py), stored together in one safetensors file whose metadata
holds the architecture:

  demo-flux     text to image
  demo-kontext  the same architecture fine-tuned for edits with the source image as a Kontext
                reference latent (frame index 1)
  demo-flux-open  text to image on the open world (demo/open_world.py, encoder demo/open_text.py;
                  metadata "world": "open")
"""
import dataclasses
import functools
import json
import os

import torch

from . import position, text
from .latent_space import LinearPatchVAE

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
WEIGHT_FILES = {"demo-flux": "demo_flux.safetensors", "demo-kontext": "demo_kontext.safetensors",
                "demo-flux-open": "demo_flux_open.safetensors"}

FLUX_CONFIG = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=text.EMBED_DIM,
                   context_in_dim=text.EMBED_DIM, hidden_size=256, mlp_ratio=2.0, num_heads=4, depth=2,
                   depth_single_blocks=4, axes_dim=[16, 24, 24], theta=10000, patch_size=2, qkv_bias=True,
                   guidance_embed=False)


def _flux_params(config):
    import comfy.ldm.flux.model as flux_model
    cfg = dict(config)
    fields = {f.name for f in dataclasses.fields(flux_model.FluxParams)}
    if "txt_ids_dims" in fields:  # newer ComfyUI: required field ([] for Flux.1)
        cfg.setdefault("txt_ids_dims", [])
    return cfg


def build_base_model(config=FLUX_CONFIG, dtype=torch.float32):
    """A comfy.model_base.Flux with uninitialised weights."""
    import comfy.supported_models as sm
    mc = sm.Flux(_flux_params(config))
    mc.set_inference_dtype(dtype, None)
    return mc.get_model({})


@dataclasses.dataclass
class DemoModel:
    """The parts of a demo model, and the ModelPatcher / VAE / conditioning ComfyUI uses."""
    base: object                 # comfy.model_base.Flux
    text_encoder: text.TextEncoder
    position: position.PositionEmbedding
    config: dict
    metadata: dict

    @property
    def diffusion_model(self):
        return self.base.diffusion_model

    def patcher(self):
        import comfy.model_management as mm
        import comfy.model_patcher
        p = comfy.model_patcher.ModelPatcher(self.base, load_device=mm.get_torch_device(),
                                             offload_device=mm.unet_offload_device())
        p.set_model_patch(position.post_input_patch(self.position), "post_input")
        return p

    def conditioning(self, prompt):
        return self.text_encoder.conditioning(prompt)

    def state_dict(self):
        sd = {f"diffusion_model.{k}": v for k, v in self.diffusion_model.state_dict().items()}
        sd.update({f"text_encoder.{k}": v for k, v in self.text_encoder.state_dict().items()})
        sd.update({f"position.{k}": v for k, v in self.position.state_dict().items()})
        return sd

    def save(self, path, dtype=torch.bfloat16, **metadata):
        from safetensors.torch import save_file
        sd = {k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()}
        meta = {**self.metadata, **{k: str(v) for k, v in metadata.items()}, "config": json.dumps(self.config)}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_file(sd, path, metadata=meta)


def new(config=FLUX_CONFIG, seed=0):
    """A freshly initialised demo model (adaLN-zero: every block starts as the identity)."""
    from fastdit.testing.tiny_models import init_weights  # training only: run from the repository root
    base = build_base_model(config)
    dm = base.diffusion_model
    init_weights(dm, seed)
    with torch.no_grad():
        for name, m in dm.named_modules():
            if name.endswith("_mod.lin") or name.endswith("modulation.lin") or name == "final_layer.linear" \
                    or name == "final_layer.adaLN_modulation.1":
                m.weight.zero_()
                m.bias.zero_()
    torch.manual_seed(seed)
    pos = position.PositionEmbedding(config["hidden_size"], init_std=(4 * position.FREQUENCIES) ** -0.5)
    return DemoModel(base, text.TextEncoder(config["context_in_dim"]), pos, dict(config), {})


def grow(model, extra_single_blocks, seed=0):
    """`model` with `extra_single_blocks` more single-stream blocks after its own, each starting as the
    identity (adaLN-zero: zero modulation, so the block adds nothing until training moves its gates);
    every other weight, the text encoder and the position embedding are the model's. The samples of
    the grown model equal the model's until it is trained."""
    config = dict(model.config, depth_single_blocks=model.config["depth_single_blocks"] + extra_single_blocks)
    grown = new(config, seed=seed)
    missing, unexpected = grown.diffusion_model.load_state_dict(model.diffusion_model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("single_blocks.") for k in missing):
        raise ValueError(f"cannot grow: unexpected {unexpected[:3]}, missing {missing[:3]}")
    return DemoModel(grown.base, model.text_encoder, model.position, config, dict(model.metadata))


NORM_WEIGHT_NAMES = (".scale", ".weight")  # FLUX RMSNorm weights: "scale" in older ComfyUI, "weight" later


def norm_keys_as_expected(state_dict, expected_keys):
    """The state dict with RMSNorm weights renamed to the name the model in use expects, so weights
    saved under one ComfyUI load under the other."""
    expected = set(expected_keys)
    out = {}
    for key, value in state_dict.items():
        if key not in expected:
            for old, new in (NORM_WEIGHT_NAMES, NORM_WEIGHT_NAMES[::-1]):
                if key.endswith(old) and key[:-len(old)] + new in expected:
                    key = key[:-len(old)] + new
                    break
        out[key] = value
    return out


def weights_path(name):
    if name not in WEIGHT_FILES:
        raise ValueError(f"unknown demo model {name!r}; available: {', '.join(WEIGHT_FILES)}")
    return os.path.join(WEIGHTS_DIR, WEIGHT_FILES[name])


def load(name_or_path, dtype=torch.bfloat16):
    """A DemoModel from a name (demo-flux, demo-kontext, demo-flux-open) or a safetensors path.

    bf16 by default, as FLUX runs in ComfyUI (and faster than fp32 on CPUs with bf16 units)."""
    from safetensors import safe_open
    path = weights_path(name_or_path) if name_or_path in WEIGHT_FILES else name_or_path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"demo model weights not found at {path}; train them with `python -m demo.train` "
                                "(see docs/DEMO_MODELS.md)")
    with safe_open(path, "pt") as f:
        metadata = dict(f.metadata() or {})
        sd = {k: f.get_tensor(k).to(dtype) for k in f.keys()}
    config = json.loads(metadata.pop("config"))
    base = build_base_model(config, dtype)
    if metadata.get("world") == "open":
        from .open_text import OpenTextEncoder as encoder_class
    else:
        encoder_class = text.TextEncoder
    parts = {"diffusion_model": base.diffusion_model, "text_encoder": encoder_class(config["context_in_dim"]),
             "position": position.PositionEmbedding(config["hidden_size"])}
    for prefix, module in parts.items():
        sub = {k[len(prefix) + 1:]: v for k, v in sd.items() if k.startswith(prefix + ".")}
        module.load_state_dict(norm_keys_as_expected(sub, module.state_dict().keys()), strict=True)
        module.to(dtype)
    parts["text_encoder"].float()
    return DemoModel(base, parts["text_encoder"], parts["position"], config, metadata)


@functools.lru_cache(maxsize=4)
def cached(name):
    """load(name), once per process (the weights are read-only; ModelPatchers are made per use)."""
    return load(name)


def vae():
    return LinearPatchVAE(latent_dims=2)
