"""Mixed-resolution token gather / scatter (Fresco), Triton beside its torch reference.

A mixed token sequence holds, per sample, rows of two kinds taken from one full-resolution latent
[B, C, T, H, W] (the sampler's "carrier"):
  - a fine token: the 2x2 latent-pixel patch at (y0, x0), exactly what the DiT's patchify makes;
  - a coarse token: a 2x2 patch of the latent downsampled by `s` (mean of s x s pixel blocks),
    i.e. a (2s)x(2s) pixel area whose top-left pixel is (y0, x0).
Each row is described by int32 (t, y0, x0, s) with s = 1 for fine rows. Token features are ordered
(channel, patch row, patch column) like ComfyUI's FLUX / Qwen-Image / HunyuanVideo patchify, and
fine rows that reach past an odd edge wrap around like `pad_to_patch_size` (circular padding).

`gather_tokens(latent, rows, factor)` builds the sequence [B', N, 4C]; `scatter_tokens(tokens, rows,
shape, factor)` writes per-token values back (a coarse value fills its whole s x s pixel blocks,
pixels past the edge are dropped like the DiTs' output crop). `rows` is [B, N, 4] for B samples; a
latent batch B' = k * B (cond/uncond chunks) reuses sample b' % B's rows. The Hadamard expansion is
not fused here: it runs only at resolution changes, on a fraction of the cells, and is elementwise.
"""
import torch

from . import backend

ROW_FIELDS = 4  # t, y0, x0, s


def _check(latent_shape, rows, factor):
    if rows.ndim != 3 or rows.shape[-1] != ROW_FIELDS:
        raise ValueError(f"rows must be [B, N, {ROW_FIELDS}] (t, y0, x0, s), got {tuple(rows.shape)}")
    if latent_shape[0] % rows.shape[0]:
        raise ValueError(f"latent batch {latent_shape[0]} is not a multiple of the row tables' batch {rows.shape[0]}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")


# ---------------------------------------------------------------------------------------------
# torch reference
# ---------------------------------------------------------------------------------------------
def _pixel_index(rows, latent_shape, factor):
    """Flat pixel index [B', N, 2, 2, F, F] of every (patch row, patch col, i, j) source pixel and
    its weight / validity: sub-pixel i, j < s of a row with block size s."""
    b2, _, t_len, h, w = latent_shape
    rows = rows.long().repeat(b2 // rows.shape[0], 1, 1)
    t, y0, x0, s = rows.unbind(-1)
    k = torch.arange(factor, device=rows.device)
    p = torch.arange(2, device=rows.device)
    y = y0[..., None, None] + p[:, None] * s[..., None, None] + k      # [B', N, 2, F]
    x = x0[..., None, None] + p[:, None] * s[..., None, None] + k
    inside = (k < s[..., None])                                          # [B', N, F]
    sub = inside[..., :, None] & inside[..., None, :]                    # [B', N, F, F]
    return t, y, x, s, sub, (t_len, h, w)


def gather_tokens_torch(latent, rows, factor):
    _check(latent.shape, rows, factor)
    b2, c = latent.shape[:2]
    t, y, x, s, sub, (t_len, h, w) = _pixel_index(rows, latent.shape, factor)
    y, x = y % h, x % w                                                  # circular pad of odd edges
    idx = (t[..., None, None, None, None] * (h * w) + y[:, :, :, None, :, None] * w
           + x[:, :, None, :, None, :])                                  # [B', N, 2, 2, F, F]
    n = idx.shape[1]
    flat = latent.reshape(b2, c, t_len * h * w).float()
    vals = flat.gather(2, idx.reshape(b2, 1, -1).expand(b2, c, -1)).view(b2, c, n, 2, 2, factor, factor)
    weight = sub[:, None, :, None, None].float() / (s * s)[:, None, :, None, None, None, None].float()
    tokens = (vals * weight).sum((-1, -2))                               # [B', C, N, 2, 2]
    return tokens.permute(0, 2, 1, 3, 4).reshape(b2, n, c * 4).to(latent.dtype)


def scatter_tokens_torch(tokens, rows, shape, factor):
    b2, c, t_len, h, w = shape
    _check(shape, rows, factor)
    t, y, x, s, sub, _ = _pixel_index(rows, shape, factor)
    n, plane = tokens.shape[1], t_len * h * w
    idx = (t[..., None, None, None, None] * (h * w) + y[:, :, :, None, :, None] * w
           + x[:, :, None, :, None, :])                                  # [B', N, 2, 2, F, F]
    keep = sub[:, :, None, None] & (y < h)[:, :, :, None, :, None] & (x < w)[:, :, None, :, None, :]
    idx = torch.where(keep, idx, plane)                                  # unused slots -> a spare column
    vals = tokens.reshape(b2, n, c, 2, 2).permute(0, 2, 1, 3, 4)[..., None, None]
    vals = vals.expand(b2, c, n, 2, 2, factor, factor).reshape(b2, c, -1)
    out = torch.zeros(b2, c, plane + 1, dtype=tokens.dtype, device=tokens.device)
    out.scatter_(2, idx.reshape(b2, 1, -1).expand(b2, c, -1), vals)      # rows partition the pixels
    return out[..., :plane].reshape(shape)


# ---------------------------------------------------------------------------------------------
# Triton
# ---------------------------------------------------------------------------------------------
try:  # kernels are module globals (Triton resolves called jit functions by name); triton is optional
    import triton
    import triton.language as tl
except Exception:  # platforms without (a working) triton use the torch reference
    triton = None

if triton is not None:
    @triton.jit
    def _row_block(rows_ptr, n_rows, n_seq, batch, t_len, h, w, d_feat, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
        """This program's token rows r and features d: masks, each row's (y0, x0, s), each
        feature's patch offset (ph, pw) and the flat latent offset of its (sample, channel, frame)."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        rmask = r < n_rows
        dmask = d < d_feat
        b2 = r // n_seq
        row = ((b2 % batch) * n_seq + r % n_seq) * 4
        t = tl.load(rows_ptr + row, mask=rmask, other=0).to(tl.int64)
        y0 = tl.load(rows_ptr + row + 1, mask=rmask, other=0)
        x0 = tl.load(rows_ptr + row + 2, mask=rmask, other=0)
        s = tl.load(rows_ptr + row + 3, mask=rmask, other=1)
        plane = t_len * h * w
        c = (d // 4).to(tl.int64)
        base = b2.to(tl.int64)[:, None] * (d_feat // 4) * plane + c[None, :] * plane + (t * h * w)[:, None]
        return r, d, rmask[:, None] & dmask[None, :], y0, x0, s, (d // 2) % 2, d % 2, base

    @triton.jit
    def _gather_kernel(lat_ptr, rows_ptr, out_ptr, n_rows, n_seq, batch, t_len, h, w, d_feat,
                       FACTOR: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
        r, d, mask, y0, x0, s, ph, pw, base = _row_block(rows_ptr, n_rows, n_seq, batch, t_len, h, w, d_feat,
                                                         BLOCK_R, BLOCK_D)
        acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
        for i in tl.static_range(FACTOR):
            for j in tl.static_range(FACTOR):
                y = y0[:, None] + ph[None, :] * s[:, None] + i
                x = x0[:, None] + pw[None, :] * s[:, None] + j
                y = tl.where(y >= h, y - h, y)          # circular pad of an odd edge (fine rows)
                x = tl.where(x >= w, x - w, x)
                ok = mask & (s[:, None] > i) & (s[:, None] > j)
                v = tl.load(lat_ptr + base + y.to(tl.int64) * w + x, mask=ok, other=0.0)
                acc += v.to(tl.float32)                 # fp32 accumulation (the interpreter's bf16 is wrong)
        acc = acc / (s * s).to(tl.float32)[:, None]
        out = out_ptr + r.to(tl.int64)[:, None] * d_feat + d[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _scatter_kernel(tok_ptr, rows_ptr, out_ptr, n_rows, n_seq, batch, t_len, h, w, d_feat,
                        FACTOR: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
        r, d, mask, y0, x0, s, ph, pw, base = _row_block(rows_ptr, n_rows, n_seq, batch, t_len, h, w, d_feat,
                                                         BLOCK_R, BLOCK_D)
        v = tl.load(tok_ptr + r.to(tl.int64)[:, None] * d_feat + d[None, :], mask=mask, other=0.0)
        for i in tl.static_range(FACTOR):
            for j in tl.static_range(FACTOR):
                y = y0[:, None] + ph[None, :] * s[:, None] + i
                x = x0[:, None] + pw[None, :] * s[:, None] + j
                ok = mask & (s[:, None] > i) & (s[:, None] > j) & (y < h) & (x < w)
                tl.store(out_ptr + base + y.to(tl.int64) * w + x, v, mask=ok)


_BLOCK_R = 128


def _launch(kernel, src, rows, dst, n_seq, shape, factor):
    b2, c, t_len, h, w = shape
    d_feat = 4 * c
    n_rows = b2 * n_seq
    block_d = min(triton.next_power_of_2(d_feat), 128)
    grid = (triton.cdiv(n_rows, _BLOCK_R), triton.cdiv(d_feat, block_d))
    kernel[grid](src, rows, dst, n_rows, n_seq, rows.shape[0], t_len, h, w, d_feat,
                 FACTOR=factor, BLOCK_R=_BLOCK_R, BLOCK_D=block_d)


def gather_tokens_triton(latent, rows, factor):
    _check(latent.shape, rows, factor)
    latent = latent.contiguous()
    rows = rows.to(device=latent.device, dtype=torch.int32).contiguous()
    b2, c = latent.shape[:2]
    n = rows.shape[1]
    out = torch.empty(b2, n, 4 * c, dtype=latent.dtype, device=latent.device)
    _launch(_gather_kernel, latent, rows, out, n, latent.shape, factor)
    return out


def scatter_tokens_triton(tokens, rows, shape, factor):
    _check(shape, rows, factor)
    tokens = tokens.contiguous()
    rows = rows.to(device=tokens.device, dtype=torch.int32).contiguous()
    out = torch.zeros(shape, dtype=tokens.dtype, device=tokens.device)
    _launch(_scatter_kernel, tokens, rows, out, rows.shape[1], tuple(shape), factor)
    return out


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------
def gather_tokens(latent, rows, factor):
    """Mixed token sequence [B', N, 4C] from a 5-D latent [B', C, T, H, W] and row tables [B, N, 4]."""
    if backend(latent) == "triton":
        return gather_tokens_triton(latent, rows, factor)
    return gather_tokens_torch(latent, rows.to(latent.device), factor)


def scatter_tokens(tokens, rows, shape, factor):
    """Latent of `shape` [B', C, T, H, W] holding each token's values over the pixels it covers."""
    shape = tuple(shape)
    if backend(tokens) == "triton":
        return scatter_tokens_triton(tokens, rows, shape, factor)
    return scatter_tokens_torch(tokens, rows.to(tokens.device), shape, factor)
