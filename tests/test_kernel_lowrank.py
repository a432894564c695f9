"""The fused low-rank split (Triton, under TRITON_INTERPRET=1 on CPU) equals its torch reference."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT
from kernels import backend
from kernels.lowrank import project, split_reference

_SCRIPT = textwrap.dedent("""
    import torch
    from kernels import backend
    from kernels.lowrank import project, split, split_reference, split_triton
    assert backend(torch.zeros(1)) == "triton"
    gen = torch.Generator().manual_seed(0)
    worst = {}
    # M not a multiple of the row block, D and k not multiples of theirs: every mask is exercised
    for dtype, (m, d, k) in ((torch.float32, (300, 96, 20)), (torch.float32, (130, 200, 70)),
                             (torch.bfloat16, (300, 96, 20))):
        f = torch.randn(m, d, generator=gen).to(dtype)
        v, _ = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
        v = v.float()
        c, r = split_triton(f, v, block_m=128, block_d=128, block_k=64)
        c0, r0 = split_reference(f, v)
        exact_c = f.double() @ v.double()
        exact_r = f.double() - exact_c @ v.double().T
        assert c.dtype == torch.float32 and r.dtype == dtype and r.shape == f.shape
        scale = f.double().abs().max() * d ** 0.5
        assert (c.double() - exact_c).abs().max() <= 1e-5 * scale, (dtype, m, d, k)
        tol = torch.finfo(dtype).eps * exact_r.abs() + 1e-5 * scale   # fp32 math, one rounding to dtype
        assert ((r.double() - exact_r).abs() <= tol).all(), (dtype, m, d, k)
        assert ((r.double() - r0.double()).abs() <= 2 * tol).all(), (dtype, m, d, k)
        worst[(str(dtype), m, d, k)] = float((c - c0).abs().max())
    # the residual is orthogonal to the basis and the split reconstructs F
    f = torch.randn(64, 48, generator=gen)
    v, _ = torch.linalg.qr(torch.randn(48, 16, generator=gen, dtype=torch.float64))
    v = v.float()
    c, r = split(f, v)                        # dispatch picks Triton
    assert (r @ v).abs().max() < 1e-4 and torch.allclose(c @ v.T + r, f, atol=1e-5)
    assert torch.equal(project(f, v), c) and split(f, v, residual=False)[1] is None
    # k = 0: no principal part, the residual is F
    c, r = split_triton(f, v[:, :0])
    assert c.shape == (64, 0) and torch.equal(r, f)
    print("OK", worst)
""")


@pytest.mark.skipif(not __import__("importlib").util.find_spec("triton"), reason="triton is not installed")
def test_triton_kernel_matches_reference_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", FASTDIT_KERNELS="triton", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr[-4000:]


def test_reference_is_fp32_and_cpu_uses_it():
    gen = torch.Generator().manual_seed(1)
    f = torch.randn(10, 32, generator=gen, dtype=torch.float64).to(torch.bfloat16)
    v, _ = torch.linalg.qr(torch.randn(32, 5, generator=gen, dtype=torch.float64))
    c, r = split_reference(f, v.float())
    assert c.dtype == torch.float32 and r.dtype == torch.bfloat16
    exact = f.double() @ v
    assert torch.allclose(c.double(), exact, atol=1e-5)
    assert torch.allclose(r.double(), f.double() - exact @ v.T, atol=2e-2)
    assert backend(f) == "torch" and torch.equal(project(f, v.float()), c)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="F has 8 channels but the basis V has 6 rows"):
        split_reference(torch.zeros(3, 8), torch.zeros(6, 2))
    with pytest.raises(ValueError, match=r"F \[M, D\] and V \[D, k\]"):
        split_reference(torch.zeros(3, 8, 1), torch.zeros(8, 2))
