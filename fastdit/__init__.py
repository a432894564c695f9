"""FastDiT: training-free acceleration of diffusion transformers inside ComfyUI.

The library is importable without the node layer; everything model-specific lives in
`fastdit.adapters`.
"""
__version__ = "0.1.0"
