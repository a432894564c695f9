"""The embedded demo world: procedural scenes, their latent space and text conditioning, and the
small models trained on them."""

if __name__ == "demo":  # imported by its top-level name from a checkout: use the pack's copy (see fastdit)
    import importlib
    import sys

    import fastdit  # noqa: F401  (routes the top-level names to the pack)
    sys.modules[__name__] = importlib.import_module("comfyui_fastdit.demo")

