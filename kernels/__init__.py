"""Triton kernels, each beside its torch reference, behind one dispatch rule.

`backend(t)` says which implementation runs for a tensor: Triton on CUDA when triton imports, the
torch reference otherwise (Windows, macOS, CPU) -- the fallback is a feature, not an error.
Set FASTDIT_KERNELS=torch to force the reference, FASTDIT_KERNELS=triton to require Triton (with
TRITON_INTERPRET=1 that also runs the kernels on CPU tensors, which is how the tests check them).
"""

if __name__ == "kernels":  # imported by its top-level name from a checkout: use the pack's copy (see fastdit)
    import importlib
    import sys

    import fastdit  # noqa: F401  (routes the top-level names to the pack)
    sys.modules[__name__] = importlib.import_module("comfyui_fastdit.kernels")

import functools
import os


@functools.lru_cache(maxsize=1)
def triton_available():
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def backend(tensor):
    choice = os.environ.get("FASTDIT_KERNELS", "auto").lower()
    if choice == "torch":
        return "torch"
    if choice == "triton":
        if not triton_available():
            raise RuntimeError("FASTDIT_KERNELS=triton but triton cannot be imported")
        return "triton"
    if choice != "auto":
        raise ValueError(f"FASTDIT_KERNELS must be auto, torch or triton, not {choice!r}")
    return "triton" if tensor.is_cuda and triton_available() else "torch"
