"""The fused forecast kernel (Triton, under TRITON_INTERPRET=1 on CPU) equals its torch reference."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT
from kernels import backend
from kernels.forecast import forecast, forecast_reference

pytest.importorskip("triton")

_SCRIPT = textwrap.dedent("""
    import torch
    from kernels.forecast import forecast, forecast_reference, forecast_triton
    from kernels import backend
    assert backend(torch.zeros(1)) == "triton"
    gen = torch.Generator().manual_seed(0)
    worst = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for n_terms in (1, 2, 3, 4):
            terms = [torch.randn(3, 777, 41, generator=gen).to(dtype) for _ in range(n_terms)]
            coeffs = [0.5, -0.25, 1.75][:n_terms - 1]
            want = forecast_reference(terms, coeffs)
            got = forecast_triton(terms, coeffs, block=32768)
            assert got.dtype == dtype and got.shape == want.shape
            exact = sum(c * t.double() for c, t in zip([1.0] + coeffs, terms))
            magnitude = sum(abs(c) * t.double().abs() for c, t in zip([1.0] + coeffs, terms))
            # fp32 accumulation, then one rounding to the feature dtype
            tol = torch.finfo(dtype).eps * exact.abs() + 4 * torch.finfo(torch.float32).eps * magnitude
            assert ((got.double() - exact).abs() <= tol).all(), (dtype, n_terms)
            assert ((got.double() - want.double()).abs() <= 2 * tol).all(), (dtype, n_terms)
            worst[(str(dtype), n_terms)] = float((got.double() - want.double()).abs().max())
    out = torch.full((2, 3, 777, 41), 7.0)
    terms = [torch.randn(3, 777, 41, generator=gen) for _ in range(3)]
    res = forecast(terms, [0.3, 0.1], out=out[1])   # dispatch picks Triton; writes into a view
    assert res.data_ptr() == out[1].data_ptr()
    assert torch.allclose(out[1], forecast_reference(terms, [0.3, 0.1]), atol=1e-6)
    assert (out[0] == 7.0).all()
    print("OK", worst)
""")


def test_triton_kernel_matches_reference_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", FASTDIT_KERNELS="triton", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr[-4000:]


def test_reference_is_fp32_accurate_and_cpu_uses_it():
    t = [torch.randn(5, 7, dtype=torch.float64) for _ in range(4)]
    c = [0.5, -2.0, 0.125]
    got = forecast_reference([x.to(torch.bfloat16) for x in t], c)
    want = sum(ci * x.to(torch.bfloat16).double() for ci, x in zip([1.0] + c, t))
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.double(), want, rtol=2 ** -7, atol=1e-2)
    assert backend(t[0]) == "torch" and torch.allclose(forecast(t, c), want.to(torch.float64), atol=0.05)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="need 1 coefficients"):
        forecast_reference([torch.zeros(2), torch.zeros(2)], [])
    with pytest.raises(ValueError, match="1 to 4 terms"):
        forecast_reference([torch.zeros(2)] * 5, [1.0] * 4)
    with pytest.raises(ValueError, match="share shape"):
        forecast_reference([torch.zeros(2), torch.zeros(3)], [1.0])


def test_chunked_half_precision_path_equals_whole_tensor_fp32_accumulation():
    """Half-precision terms accumulate in fp32 chunk by chunk; the result is bit for bit what
    converting each whole term to fp32 gives (sizes spanning several chunks, a remainder, and a
    non-contiguous `out`)."""
    from kernels import forecast as fc
    gen = torch.Generator().manual_seed(3)
    for dtype in (torch.bfloat16, torch.float16):
        for shape in ((2, 333, 256), (fc.CHUNK + 5,), (7,)):
            terms = [torch.randn(shape, generator=gen).to(dtype) for _ in range(3)]
            coeffs = [0.37, -0.11]
            whole = terms[0].float()
            for c, t in zip(coeffs, terms[1:]):
                whole.add_(t.float(), alpha=c)   # whole-tensor conversion, the same fp32 add
            whole = whole.to(dtype)
            assert torch.equal(forecast_reference(terms, coeffs), whole)
            out = torch.empty(shape, dtype=dtype)
            assert forecast_reference(terms, coeffs, out=out) is out and torch.equal(out, whole)
        strided = torch.empty((2, 333, 512), dtype=dtype)[..., ::2]
        terms = [torch.randn((2, 333, 256), generator=gen).to(dtype) for _ in range(2)]
        forecast_reference(terms, [0.5], out=strided)
        assert torch.equal(strided, terms[0].float().add_(terms[1].float(), alpha=0.5).to(dtype))
        transposed = [t.transpose(1, 2) for t in terms]          # non-contiguous terms
        assert torch.equal(forecast_reference(transposed, [0.5]),
                           transposed[0].float().add_(transposed[1].float(), alpha=0.5).to(dtype))
