"""Token gather / scatter: the torch reference matches the DiTs' own patchify, and the Triton
kernels match the reference (CPU: TRITON_INTERPRET=1 in a subprocess, large blocks)."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from conftest import ROOT
from kernels import tokens as K


def _patchify(x):
    """ComfyUI's patchify: circular pad to even size, then 2x2 patches (channel, row, col)."""
    x = F.pad(x.flatten(1, 2), (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode="circular").unflatten(1, x.shape[1:3])
    return rearrange(x, "b c t (h ph) (w pw) -> b (t h w) (c ph pw)", ph=2, pw=2)


def _rows(t_len, h, w, s=1):
    step = 2 * s
    return torch.tensor([(t, y, x, s) for t in range(t_len) for y in range(0, h - step + 1 if s > 1 else h, step)
                         for x in range(0, w - step + 1 if s > 1 else w, step)], dtype=torch.int32)[None]


@pytest.mark.parametrize("shape", [(2, 4, 1, 8, 10), (1, 3, 2, 9, 13)])
def test_fine_rows_are_the_model_patchify(shape):
    x = torch.randn(shape)
    rows = _rows(*shape[2:])
    assert torch.equal(K.gather_tokens_torch(x, rows, 2), _patchify(x))
    assert torch.equal(K.scatter_tokens_torch(_patchify(x), rows, shape, 2), x)    # the output crop


@pytest.mark.parametrize("f", [2, 4])
def test_coarse_rows_are_the_patchified_block_mean(f):
    x = torch.randn(2, 4, 1, 16, 24)
    rows = _rows(1, 16, 24, s=f)
    pooled = F.avg_pool2d(x[:, :, 0], f).unsqueeze(2)
    assert torch.allclose(K.gather_tokens_torch(x, rows, f), _patchify(pooled), atol=1e-6)
    spread = K.scatter_tokens_torch(_patchify(pooled), rows, x.shape, f)
    assert torch.allclose(spread, pooled.repeat_interleave(f, -2).repeat_interleave(f, -1), atol=1e-6)


def test_bad_row_tables_are_refused():
    with pytest.raises(ValueError, match="multiple"):
        K.gather_tokens_torch(torch.zeros(3, 4, 1, 8, 8), torch.zeros(2, 5, 4, dtype=torch.int32), 2)
    with pytest.raises(ValueError, match="t, y0, x0, s"):
        K.gather_tokens_torch(torch.zeros(2, 4, 1, 8, 8), torch.zeros(2, 5, 3, dtype=torch.int32), 2)


_TRITON_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from kernels import backend, tokens as K
from fastdit.dynres.layout import CellGrid
results = []
for dtype in (torch.float32, torch.float16):
    for f, shape in ((2, (2, 16, 1, 19, 22)), (4, (1, 16, 2, 17, 26))):
        grid = CellGrid.of(shape, f)
        gen = torch.Generator().manual_seed(f)
        up = torch.zeros(shape[0], grid.cells, dtype=torch.bool)
        for b in range(shape[0]):
            up[b, torch.randperm(grid.cells, generator=gen)[: grid.cells // 2]] = True
        rows = grid.rows(up.view(shape[0], *grid.cell_shape))
        lat = torch.randn((2 * shape[0],) + shape[1:], generator=gen).to(dtype)    # cond + uncond chunks
        assert backend(lat) == "triton"
        got = K.gather_tokens(lat, rows, f)
        want = K.gather_tokens_torch(lat, rows, f)
        tok = torch.randn(got.shape, generator=gen).to(dtype)
        back = K.scatter_tokens(tok, rows, lat.shape, f)
        back_ref = K.scatter_tokens_torch(tok, rows, lat.shape, f)
        results.append({"dtype": str(dtype), "f": f, "gather": float((got.float() - want.float()).abs().max()),
                        "scatter": float((back.float() - back_ref.float()).abs().max()),
                        "dtype_kept": got.dtype == dtype and back.dtype == dtype, "tokens": got.shape[1]})
print(json.dumps(results))
"""


def test_triton_kernels_match_the_reference_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", FASTDIT_KERNELS="triton")
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT, ROOT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 4
    for r in results:
        tol = 1e-6 if r["dtype"] == "torch.float32" else 1e-3
        assert r["gather"] <= tol and r["scatter"] == 0.0 and r["dtype_kept"], r
        assert r["tokens"] > 0
