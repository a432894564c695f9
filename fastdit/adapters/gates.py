"""Gate-only modulation for forecast steps.

A DiT block's modulation linear maps the conditioning vector to shift, scale and gate chunks
(FLUX.1 / HunyuanVideo: 3 per ModulationOut; Qwen-Image: 6 per stream). A forecast step adds
gate * forecast to the stream and needs no shift or scale, so it multiplies by the gate rows of the
weight (a contiguous view of the rows from the first gate to the last). The rows of a linear are
computed independently, so each gate equals the chunk of the full product (tests check it bit for
bit).

This only holds where the module's own forward is `F.linear` on its stored weight: ComfyUI's ops
Linear with no run-time cast (manual cast, offload), no weight or bias functions (LoRA applied at
run time, lowvram patches) and weights of a plain tensor type (quantized or GGUF weights are tensor
subclasses) in the input's dtype and device. Anything else returns None and the caller runs the
module as it is.
"""
from typing import Optional, Sequence

import torch


def _linear_forwards() -> frozenset:
    """The Linear forwards that are F.linear on the stored weight when nothing casts or patches it."""
    forwards = {torch.nn.Linear.forward}
    try:
        import comfy.ops
        ops_linear = getattr(getattr(comfy.ops, "disable_weight_init", None), "Linear", None)
        if ops_linear is not None:
            forwards.add(ops_linear.forward)
    except ImportError:
        pass
    return frozenset(forwards)


# built once at import (the pack imports this module from inside ComfyUI); a plain constant, which
# torch.compile reads without tracing a cache wrapper
KNOWN_LINEAR_FORWARDS = _linear_forwards()


def _plain(t: Optional[torch.Tensor], like: torch.Tensor) -> bool:
    return (t is None or (type(t) in (torch.Tensor, torch.nn.Parameter) and type(t.data) is torch.Tensor
                          and t.dtype == like.dtype and t.device == like.device))


def plain_linear_weights(linear: torch.nn.Module, like: torch.Tensor) -> Optional[tuple]:
    """(weight, bias) when `linear(x)` is exactly F.linear(x, weight, bias) for an input like `like`;
    None when the module casts, patches or quantizes its weights at run time."""
    if type(linear).forward not in KNOWN_LINEAR_FORWARDS:
        return None
    if getattr(linear, "comfy_cast_weights", False) or getattr(linear, "weight_function", None) \
            or getattr(linear, "bias_function", None):
        return None
    weight, bias = getattr(linear, "weight", None), getattr(linear, "bias", None)
    if weight is None or weight.ndim != 2 or not (_plain(weight, like) and _plain(bias, like)):
        return None
    return weight, bias


def linear_chunks(linear: torch.nn.Module, x: torch.Tensor, n_chunks: int,
                  indices: Sequence[int]) -> Optional[list]:
    """[linear(x).chunk(n_chunks, dim=-1)[i] for i in indices], computing only the rows from the
    first to the last of those chunks (one product: on a CPU a small product's fixed cost outweighs
    the rows it skips); None when the module's forward is not a plain F.linear
    (plain_linear_weights)."""
    params = plain_linear_weights(linear, x)
    if params is None:
        return None
    weight, bias = params
    rows = weight.shape[0] // n_chunks
    if rows * n_chunks != weight.shape[0]:
        return None
    first, last = min(indices), max(indices)
    span = slice(first * rows, (last + 1) * rows)
    out = torch.nn.functional.linear(x, weight[span], None if bias is None else bias[span])
    return [out[..., (i - first) * rows:(i - first + 1) * rows] for i in indices]
