"""Model-family adapters: all knowledge of a model family lives in one file here.

`for_model(model)` returns the adapter for a ModelPatcher (or a DiT module) or raises
UnsupportedModelError naming the supported families.
"""
from .base import (BlockRef, ModelAdapter, TokenLayout, UnsupportedInputError, UnsupportedModelError, call_arguments,
                   reference_method)
from .flux import FluxAdapter
from .hunyuan_video import HunyuanVideoAdapter
from .qwen_image import QwenImageAdapter
from .wan import WanAdapter

ADAPTERS = [FluxAdapter, QwenImageAdapter, HunyuanVideoAdapter, WanAdapter]


def supported_families():
    return ", ".join(a.display_name for a in ADAPTERS)


def diffusion_model_of(model):
    """The DiT module of a ModelPatcher, BaseModel or DiT."""
    inner = getattr(model, "model", model)              # ModelPatcher -> BaseModel
    return getattr(inner, "diffusion_model", inner)      # BaseModel -> DiT


def for_model(model, technique="FastDiT"):
    dm = diffusion_model_of(model)
    for adapter in ADAPTERS:
        if adapter.matches(dm):
            return adapter(dm)
    raise UnsupportedModelError(
        f"{technique} does not support this model ({type(dm).__name__} from {type(dm).__module__}). "
        f"Supported model families: {supported_families()}.")


__all__ = ["ADAPTERS", "BlockRef", "ModelAdapter", "TokenLayout", "UnsupportedInputError", "UnsupportedModelError",
           "call_arguments", "diffusion_model_of", "for_model", "reference_method", "supported_families"]
