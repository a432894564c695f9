"""ComfyUI-FastDiT: training-free acceleration nodes for diffusion transformers.

ComfyUI calls `comfy_entrypoint()` (V3 node API). NODE_CLASS_MAPPINGS is deliberately not
defined: when it exists ComfyUI ignores the entry point. The nodes are imported when ComfyUI asks
for them, so the package itself imports without ComfyUI (scripts and kernels of a checkout).
WEB_DIRECTORY holds the pack's frontend extension (the Compare node's report on the canvas).
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import FastDiTExtension
    return FastDiTExtension()
