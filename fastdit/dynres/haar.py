"""Orthonormal Haar / Hadamard algebra on latent pixels.

Tensors are [..., H, W] with H, W multiples of the block size f. For an f x f block the
orthonormal Haar DC coefficient is sum / f (the 2x2 case: (c1+c2+c3+c4)/2), so the DC of
unit-variance white noise is unit variance again; the detail coefficients are what the block
holds beyond its mean. `H4` is the normalised 4x4 Hadamard matrix, orthonormal and symmetric
(H4 @ H4 = I), the 2x2 case written out.
"""
import torch

H4 = 0.5 * torch.tensor([[1., 1., 1., 1.], [1., -1., 1., -1.], [1., 1., -1., -1.], [1., -1., -1., 1.]])


def block_mean(x, f):
    """Mean of each f x f block: [..., H, W] -> [..., H/f, W/f]."""
    if f == 1:
        return x
    *lead, h, w = x.shape
    return x.reshape(*lead, h // f, f, w // f, f).mean(dim=(-3, -1))


def nearest_up(x, f):
    """Each value repeated over an f x f block: [..., h, w] -> [..., h*f, w*f]."""
    if f == 1:
        return x
    return x.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


def haar_dc(x, f):
    """Orthonormal Haar DC of each f x f block (sum / f)."""
    return block_mean(x, f) * f


def haar_detail(x, f):
    """What each pixel holds beyond its block mean (the detail coefficients, synthesised back)."""
    return x - nearest_up(block_mean(x, f), f)


def haar_synthesis(dc, detail, f):
    """Fine pixels of blocks with DC coefficients `dc` [..., h, w] and the detail part `detail`
    [..., h*f, w*f] (zero mean per block): for f = 2 this is H4 @ [DC, d1, d2, d3] per block."""
    return nearest_up(dc / f, f) + detail


def split_2x2(x):
    """[..., 2h, 2w] -> Haar coefficients [..., 4, h, w] (DC, d1, d2, d3) through H4."""
    *lead, h2, w2 = x.shape
    blocks = x.reshape(*lead, h2 // 2, 2, w2 // 2, 2).movedim(-3, -2).flatten(-2)   # [..., h, w, 4]
    return (blocks @ H4.to(x).T).movedim(-1, -3)


def merge_2x2(coef):
    """Inverse of split_2x2: [..., 4, h, w] -> [..., 2h, 2w]."""
    *lead, _, h, w = coef.shape
    blocks = coef.movedim(-3, -1) @ H4.to(coef).T                                   # H4 is symmetric
    return blocks.unflatten(-1, (2, 2)).movedim(-2, -3).reshape(*lead, 2 * h, 2 * w)
