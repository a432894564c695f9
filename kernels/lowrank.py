"""Low-rank split of a feature matrix against an orthonormal basis (SVD-Cache).

    C = F V            principal coefficients, [M, k], fp32
    R = F - C V^T      residual, [M, D], in F's dtype

F is [M, D] (tokens x channels, any float dtype), V is [D, k] with orthonormal columns. The Triton
kernel does both in one launch per block of rows: it reads the F rows once for C, keeps C in
global memory (written and read back by the same program) and reads the F rows again for R, so R
never needs a separate F @ V pass; everything accumulates in fp32. `project` is the same kernel
without the residual phase. The torch reference does the same arithmetic with two matmuls.
"""
import functools
import logging
import os
from typing import Optional, Tuple

import torch

from . import backend


def _check(f: torch.Tensor, v: torch.Tensor):
    if f.ndim != 2 or v.ndim != 2:
        raise ValueError(f"lowrank takes F [M, D] and V [D, k], got {tuple(f.shape)} and {tuple(v.shape)}")
    if f.shape[1] != v.shape[0]:
        raise ValueError(f"F has {f.shape[1]} channels but the basis V has {v.shape[0]} rows")
    if f.device != v.device:
        raise ValueError(f"F is on {f.device}, V on {v.device}")


def split_reference(f: torch.Tensor, v: torch.Tensor, residual: bool = True
                    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Torch reference (and the CPU / no-Triton path): (C fp32, R in F's dtype or None)."""
    _check(f, v)
    f32, v32 = f.float(), v.float()
    c = f32 @ v32
    if not residual:
        return c, None
    return c, (f32 - c @ v32.T).to(f.dtype)


@functools.lru_cache(maxsize=1)
def _triton_kernel():
    """The jitted kernel, built on first use (triton is imported only where it runs)."""
    import triton
    import triton.language as tl

    @triton.jit
    def lowrank_kernel(f_ptr, v_ptr, c_ptr, r_ptr, M, D, K, stride_f, stride_v, stride_c, stride_r,
                       RESIDUAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < M
        # phase 1: C[rows, :] = F[rows, :] @ V, one block of k at a time (fp32: the interpreter's
        # bf16 arithmetic is wrong, and the coefficients feed an EMA)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < K
            acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + tl.arange(0, BLOCK_D)
                dmask = ds < D
                f = tl.load(f_ptr + rows[:, None] * stride_f + ds[None, :], mask=rmask[:, None] & dmask[None, :],
                            other=0.0).to(tl.float32)
                v = tl.load(v_ptr + ds[:, None] * stride_v + ks[None, :], mask=dmask[:, None] & kmask[None, :],
                            other=0.0).to(tl.float32)
                acc += tl.dot(f, v, input_precision="ieee")
            tl.store(c_ptr + rows[:, None] * stride_c + ks[None, :], acc, mask=rmask[:, None] & kmask[None, :])
        if RESIDUAL:
            tl.debug_barrier()  # C of these rows is complete before any thread reads it back
            # phase 2: R[rows, d-block] = F[rows, d-block] - C[rows, :] @ V[d-block, :]^T
            for d0 in range(0, D, BLOCK_D):
                ds = d0 + tl.arange(0, BLOCK_D)
                dmask = ds < D
                acc = tl.load(f_ptr + rows[:, None] * stride_f + ds[None, :], mask=rmask[:, None] & dmask[None, :],
                              other=0.0).to(tl.float32)
                for k0 in range(0, K, BLOCK_K):
                    ks = k0 + tl.arange(0, BLOCK_K)
                    kmask = ks < K
                    c = tl.load(c_ptr + rows[:, None] * stride_c + ks[None, :], mask=rmask[:, None] & kmask[None, :],
                                other=0.0)
                    vt = tl.load(v_ptr + ds[None, :] * stride_v + ks[:, None], mask=kmask[:, None] & dmask[None, :],
                                 other=0.0).to(tl.float32)
                    acc -= tl.dot(c, vt, input_precision="ieee")
                tl.store(r_ptr + rows[:, None] * stride_r + ds[None, :], acc.to(r_ptr.dtype.element_ty),
                         mask=rmask[:, None] & dmask[None, :])

    return lowrank_kernel


def split_triton(f: torch.Tensor, v: torch.Tensor, residual: bool = True, block_m: int = 64, block_d: int = 64,
                 block_k: int = 64) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Triton launch: one program per `block_m` rows (block sizes >= 16, powers of two)."""
    _check(f, v)
    m, d = f.shape
    k = v.shape[1]
    f = f if f.stride(1) == 1 else f.contiguous()
    v = v if v.stride(1) == 1 else v.contiguous()
    c = torch.empty((m, k), dtype=torch.float32, device=f.device)
    r = torch.empty_like(f, memory_format=torch.contiguous_format) if residual else None
    if m == 0:
        return c, r
    if k == 0:
        c = c.zero_()
        return c, (r.copy_(f) if residual else None)
    grid = ((m + block_m - 1) // block_m,)
    _triton_kernel()[grid](f, v, c, r if residual else c, m, d, k, f.stride(0), v.stride(0), c.stride(0),
                           r.stride(0) if residual else 0, RESIDUAL=residual, BLOCK_M=block_m, BLOCK_D=block_d,
                           BLOCK_K=block_k)
    return c, r


_triton_failed = None


def split(f: torch.Tensor, v: torch.Tensor, residual: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(C = F V in fp32, R = F - C V^T in F's dtype, or None without `residual`), Triton on CUDA.

    With the automatic backend, a Triton launch that fails (a GPU or Triton release the kernel was
    not built for) is reported once and the torch reference is used from then on."""
    global _triton_failed
    if backend(f) == "triton" and _triton_failed is None:
        if os.environ.get("FASTDIT_KERNELS", "auto").lower() == "triton":
            return split_triton(f, v, residual)
        try:
            return split_triton(f, v, residual)
        except Exception as e:  # noqa: BLE001 -- any compile/launch failure: same math in torch
            _triton_failed = f"{type(e).__name__}: {e}"
            logging.warning(f"FastDiT: the Triton low-rank kernel failed ({_triton_failed}); using torch")
    return split_reference(f, v, residual)


def project(f: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """C = F V in fp32 (the split without its residual phase)."""
    return split(f, v, residual=False)[0]
