"""Fused feature forecast: out = D0 + sum_i c_i * D_i (HiCache / TaylorSeer forecasts).

The Triton kernel reads each term once, writes the result once and accumulates in fp32 whatever
the feature dtype (coefficients are Python floats); `forecast_reference` does the same fp32
arithmetic term by term. Without Triton (CPU, or a GPU without triton), half-precision features
are combined in their own dtype (`forecast_in_feature_dtype`): each add is computed in fp32 and
rounded once, so the result differs from the fp32 accumulation by at most one rounding per term,
as TaylorSeer's own code computes it; on a CPU that is about three times faster for bf16 (no
conversions of whole tensors). `forecast()` dispatches with `kernels.backend`.
"""
import functools

import torch

from . import backend

MAX_TERMS = 4  # D0 + up to three differences (order <= 3)
HALF_PRECISION = (torch.bfloat16, torch.float16)


def _check(terms, coeffs, out):
    if not 1 <= len(terms) <= MAX_TERMS:
        raise ValueError(f"forecast takes 1 to {MAX_TERMS} terms, got {len(terms)}")
    if len(coeffs) != len(terms) - 1:
        raise ValueError(f"{len(terms)} terms need {len(terms) - 1} coefficients, got {len(coeffs)}")
    ref = terms[0]
    for t in terms[1:]:
        if t.shape != ref.shape or t.dtype != ref.dtype or t.device != ref.device:
            raise ValueError("forecast terms must share shape, dtype and device")
    if out is not None and (out.shape != ref.shape or out.device != ref.device):
        raise ValueError(f"out has shape {tuple(out.shape)} on {out.device}, terms {tuple(ref.shape)} on {ref.device}")


def forecast_reference(terms, coeffs, out=None):
    """Torch reference of the Triton kernel: fp32 accumulation whatever the feature dtype."""
    _check(terms, coeffs, out)
    if not coeffs:
        return terms[0].clone() if out is None else out.copy_(terms[0])
    if out is not None and out.dtype == terms[0].dtype == torch.float32:
        return forecast_in_feature_dtype(terms, coeffs, out)  # fp32 features: the same adds, no copies
    if out is None:
        out = torch.empty_like(terms[0], memory_format=torch.contiguous_format)
    dest = out if out.is_contiguous() else torch.empty(out.shape, dtype=out.dtype, device=out.device)
    _accumulate_in_chunks([t.reshape(-1) for t in terms], coeffs, dest.view(-1))
    return out if dest is out else out.copy_(dest)


CHUNK = 1 << 16  # elements of the fp32 scratch: stays in cache while the terms stream through


def _accumulate_in_chunks(flat, coeffs, dest):
    """dest = flat[0] + sum c_i flat[i] (1-D tensors) for half-precision terms, accumulated in fp32 one
    cache-sized chunk at a time: the same fp32 arithmetic and single rounding as converting whole
    tensors, without allocating full-size fp32 copies (on a CPU those conversions dominated a
    forecast step)."""
    n = dest.numel()
    scratch = torch.empty(min(n, CHUNK), dtype=torch.float32, device=dest.device)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        acc = scratch[:stop - start]
        acc.copy_(flat[0][start:stop])
        for c, t in zip(coeffs, flat[1:]):
            acc.add_(t[start:stop], alpha=float(c))  # bf16 -> fp32 is exact; the add runs in fp32
        dest[start:stop].copy_(acc)


@functools.lru_cache(maxsize=1)
def _triton_kernel():
    """The jitted kernel, built on first use (triton is imported only where it runs)."""
    import triton
    import triton.language as tl

    @triton.jit
    def forecast_kernel(out_ptr, d0_ptr, d1_ptr, d2_ptr, d3_ptr, c1, c2, c3, n_elements,
                        N_TERMS: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elements
        # upcast inside the kernel: fp32 accumulation (and the interpreter's bf16 math is wrong)
        acc = tl.load(d0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if N_TERMS > 1:
            acc += c1 * tl.load(d1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if N_TERMS > 2:
            acc += c2 * tl.load(d2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if N_TERMS > 3:
            acc += c3 * tl.load(d3_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)

    return forecast_kernel


def forecast_triton(terms, coeffs, out=None, block=4096):
    """Triton launch: flat 1-D grid over the (contiguous) terms."""
    _check(terms, coeffs, out)
    terms = [t.contiguous() for t in terms]
    target = out if out is not None and out.is_contiguous() else torch.empty_like(terms[0])
    n = target.numel()
    ptrs = terms + [terms[0]] * (MAX_TERMS - len(terms))
    cs = [float(c) for c in coeffs] + [0.0] * (MAX_TERMS - 1 - len(coeffs))
    grid = ((n + block - 1) // block,)
    _triton_kernel()[grid](target, *ptrs, *cs, n, N_TERMS=len(terms), BLOCK=block)
    if out is not None and target is not out:
        out.copy_(target)
        return out
    return target


def forecast_in_feature_dtype(terms, coeffs, out=None):
    """D0 + sum c_i D_i computed in the terms' dtype: one add per term (torch computes each in fp32
    and rounds it to that dtype), written straight into `out` when it has that dtype."""
    _check(terms, coeffs, out)
    if not coeffs:
        return terms[0].clone() if out is None else out.copy_(terms[0])
    into_out = out is not None and out.dtype == terms[0].dtype
    dest = torch.add(terms[0], terms[1], alpha=float(coeffs[0]), **({"out": out} if into_out else {}))
    for c, t in zip(coeffs[1:], terms[2:]):
        dest.add_(t, alpha=float(c))
    return dest if out is None or into_out else out.copy_(dest)


def forecast(terms, coeffs, out=None):
    """D0 + sum c_i D_i with the backend chosen for these tensors: Triton on CUDA; otherwise in the
    feature dtype for half-precision terms and the fp32 reference for fp32 ones."""
    if backend(terms[0]) == "triton":
        return forecast_triton(terms, coeffs, out)
    if terms[0].dtype in HALF_PRECISION:
        return forecast_in_feature_dtype(terms, coeffs, out)
    return forecast_reference(terms, coeffs, out)
