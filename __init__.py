"""ComfyUI-FastDiT: training-free acceleration nodes for diffusion transformers.

ComfyUI calls `comfy_entrypoint()` (V3 node API). NODE_CLASS_MAPPINGS is deliberately not
defined: when it exists ComfyUI ignores the entry point.
"""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
