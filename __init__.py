"""ComfyUI-FastDiT: training-free acceleration nodes for diffusion transformers.

ComfyUI calls `comfy_entrypoint()` (V3 node API). NODE_CLASS_MAPPINGS is deliberately not
defined: when it exists ComfyUI ignores the entry point.
"""
# ComfyUI imports this folder as a package. Test collectors may also import this file as a lone
# module (e.g. from a checkout folder named "ComfyUI-FastDiT"), where there is nothing to export.
if __package__:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
