"""Tiny models of the real ComfyUI classes (random weights) for tests and CPU benches.

Each model is built through `comfy.supported_models` -> `comfy.model_base` exactly as a loaded
checkpoint would be, wrapped in a real ModelPatcher. comfy's ops skip weight init, so every
parameter is initialised here from a seeded generator (deterministic per seed).
"""
import dataclasses
import math

import torch

FAMILIES = ("flux", "flux_kontext", "qwen_image", "qwen_image_edit", "hunyuan_video", "wan")
VIDEO_FAMILIES = ("hunyuan_video", "wan")
EDIT_FAMILIES = ("flux_kontext", "qwen_image_edit")
MAX_FRAMES = 64
NON_DIT = ("sd15",)  # a UNet model, for "unsupported model" tests

TEXT_TOKENS = 8


def _flux_config():
    import comfy.ldm.flux.model as flux_model
    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64,
               hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=2, depth_single_blocks=2,
               axes_dim=[8, 12, 12], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)
    fields = {f.name for f in dataclasses.fields(flux_model.FluxParams)}
    if "txt_ids_dims" in fields:  # newer ComfyUI: required field ([] for Flux.1)
        cfg["txt_ids_dims"] = []
    return cfg


def _qwen_config():
    return dict(image_model="qwen_image", in_channels=64, out_channels=16, num_layers=2,
                attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64,
                axes_dims_rope=(8, 12, 12))


def _hunyuan_config():
    import comfy.ldm.hunyuan_video.model as hy_model
    cfg = dict(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=32,
               context_in_dim=64, hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=2,
               depth_single_blocks=2, axes_dim=[8, 12, 12], theta=256, patch_size=[1, 2, 2],
               qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False, meanflow_sum=False,
               use_cond_type_embedding=False, vision_in_dim=None)
    fields = {f.name for f in dataclasses.fields(hy_model.HunyuanVideoParams)}
    return {k: v for k, v in cfg.items() if k in fields or k == "image_model"}


def _wan_config():
    return dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=16, in_dim=16,
                dim=64, ffn_dim=128, freq_dim=64, text_dim=64, out_dim=16, num_heads=2, num_layers=2,
                window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)


def _sd15_config():
    return {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": 1,
            "transformer_depth": [1, 0], "channel_mult": [1, 2], "transformer_depth_middle": 0,
            "use_linear_in_transformer": False, "context_dim": 64, "num_heads": 2, "num_head_channels": -1,
            "transformer_depth_output": [1, 1, 0, 0]}


def _model_config(family):
    import comfy.supported_models as sm
    if family in ("flux", "flux_kontext"):
        return sm.Flux(_flux_config())
    if family in ("qwen_image", "qwen_image_edit"):
        return sm.QwenImage(_qwen_config())
    if family == "hunyuan_video":
        return sm.HunyuanVideo(_hunyuan_config())
    if family == "wan":
        return sm.WAN21_T2V(_wan_config())
    if family == "sd15":
        return sm.SD15(_sd15_config())
    raise ValueError(f"unknown tiny model family {family!r}; known: {', '.join(FAMILIES + NON_DIT)}")


@torch.no_grad()
def init_weights(module, seed):
    """Deterministic, scale-preserving init (comfy's ops leave weights uninitialised)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
        elif name.endswith("bias"):
            p.zero_()
        elif "norm" in name or name.endswith("scale"):
            p.fill_(1.0)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def make_model(family="flux", seed=0, dtype=torch.float32, manual_cast_dtype=None):
    """A ModelPatcher around a tiny random model of `family` (see FAMILIES). With
    `manual_cast_dtype` ComfyUI builds it with its manual-cast ops, as for a checkpoint whose weight
    dtype the device cannot compute in: weights stored in `dtype`, cast at every call."""
    import comfy.model_management as mm
    import comfy.model_patcher
    mc = _model_config(family)
    mc.set_inference_dtype(dtype, manual_cast_dtype)
    base = mc.get_model({})
    init_weights(base.diffusion_model, seed)
    base.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def latent_shape(family, height=16, width=16, frames=1, batch=1):
    """Latent tensor shape the family samples at (image families are 4-D, video/Qwen 5-D)."""
    if family in ("flux", "flux_kontext"):
        return (batch, 16, height, width)
    if family == "sd15":
        return (batch, 4, height, width)
    return (batch, 16, frames, height, width)


def conditioning(family, seed=0, batch=1, reference=None, tokens=TEXT_TOKENS):
    """ComfyUI CONDITIONING for a tiny model: [[context, {extras}]].

    `reference` (a latent in the family's layout) adds Kontext / Qwen-Edit reference latents."""
    gen = torch.Generator().manual_seed(seed)
    ctx = torch.randn(batch, tokens, 64, generator=gen)
    extras = {}
    if family in ("flux", "flux_kontext", "hunyuan_video"):
        extras["pooled_output"] = torch.randn(batch, 32, generator=gen)
    if family in ("flux", "flux_kontext"):
        extras["guidance"] = 3.5
    if reference is not None:
        if family not in ("flux_kontext", "qwen_image_edit", "flux", "qwen_image"):
            raise ValueError(f"{family} takes no reference latents")
        extras["reference_latents"] = [reference]
    return [[ctx, extras]]


def reference_latent(family, height=16, width=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(latent_shape(family, height, width), generator=gen)


def family_frames_error(family, frames):
    """What is wrong with this family / frames pair, or None (None values are not checked)."""
    if family is not None and family not in FAMILIES:
        return f"family must be one of {', '.join(FAMILIES)}, not {family!r}"
    if frames is not None and not 1 <= frames <= MAX_FRAMES:
        return f"frames must be between 1 and {MAX_FRAMES}, not {frames}"
    if family is not None and frames is not None and frames > 1 and family not in VIDEO_FAMILIES:
        return f"frames > 1 needs a video family ({', '.join(VIDEO_FAMILIES)}); {family} makes images"
    return None


def graph_inputs(family, seed, width, height, frames=1, batch_size=1):
    """(model, positive, negative, latent dict, vae) of a tiny model, as the test-model node returns
    them: references for edit families, a lossless patch VAE of the family's latent layout."""
    from ...demo.latent_space import LinearPatchVAE
    error = family_frames_error(family, frames)
    if error:
        raise ValueError(error)
    model = make_model(family, seed)
    ref = reference_latent(family, height, width, seed + 1) if family in EDIT_FAMILIES else None
    positive = conditioning(family, seed + 2, reference=ref)
    negative = conditioning(family, seed + 3, reference=ref)
    latent = {"samples": torch.zeros(latent_shape(family, height, width, frames, batch_size))}
    vae = LinearPatchVAE(latent_dims=3 if len(latent["samples"].shape) == 5 else 2)
    return model, positive, negative, latent, vae


def tiny_controlnet(seed: int = 7, residual_scale: float = 0.2):
    """ComfyUI's ControlNet object around its own ControlNetFlux (XLabs layout: controlnet_blocks,
    input_hint_block) at the width of the tiny FLUX model, with seeded weights. It is built here
    rather than by ControlNetLoader because ComfyUI's FLUX detection knows only full-size head
    layouts, which a 64-wide model cannot have."""
    import comfy.controlnet
    import comfy.ldm.flux.controlnet
    import comfy.ops
    net = comfy.ldm.flux.controlnet.ControlNetFlux(operations=comfy.ops.disable_weight_init, **_flux_config())
    init_weights(net, seed)
    with torch.no_grad():
        for block in list(net.controlnet_blocks) + list(net.controlnet_single_blocks):
            block.weight.mul_(residual_scale)
    return comfy.controlnet.ControlNet(net, extra_conds=["y", "guidance"])   # as ComfyUI's XLabs loader
