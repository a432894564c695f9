"""Image fidelity metrics (PSNR, SSIM, difference heat map) on ComfyUI IMAGE tensors.

IMAGE tensors are [B, H, W, C] floats in [0, 1]; MASKs are [B, H, W] or [H, W] in [0, 1].

Non-finite pixels (any channel NaN or +-inf) never yield a plausible number: an image with one in
its compared region (the whole image, or where the mask is > 0) gets NaN for PSNR and SSIM, and
so does the batch's pooled PSNR / mean SSIM. Outside the mask a non-finite pixel leaves PSNR alone
(a per-pixel measure) and makes SSIM NaN only if SSIM's 11x11 window reaches it from the mask.
`count_nonfinite` says which case applies, for reporting.
"""
import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

# SSIM constants of Wang et al. 2004 for a data range of 1; Gaussian window 11 / sigma 1.5.
_SSIM_C1 = 0.01 ** 2
_SSIM_C2 = 0.03 ** 2
_SSIM_SIZE = 11
_SSIM_SIGMA = 1.5
_SSIM_REACH = _SSIM_SIZE // 2  # pixels a window reaches on each side of its centre
_SSIM_ROWS = 32                # rows per strip: bounds memory and keeps a strip's statistics in cache
_SSIM_COLS = 64                # columns per block of the horizontal band product


def _gaussian_1d(size: int = _SSIM_SIZE, sigma: float = _SSIM_SIGMA, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


@functools.lru_cache(maxsize=16)
def _band(n: int, device: torch.device) -> torch.Tensor:
    """[n, n + 10] float64 matrix whose row i holds the 1-D Gaussian at columns i..i+10: applied to
    n + 10 padded samples it gives the n filtered ones (a 1-D convolution as a matrix product)."""
    band = torch.zeros(n, n + 2 * _SSIM_REACH, dtype=torch.float64, device=device)
    for k, w in enumerate(_gaussian_1d(device=device).tolist()):
        band.diagonal(k).fill_(w)
    return band


def broadcast_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check two IMAGE batches have the same size; a batch of 1 is compared against every image."""
    if a.ndim != 4 or b.ndim != 4:
        raise ValueError(f"expected IMAGE tensors [B,H,W,C], got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"images differ in size: {a.shape[2]}x{a.shape[1]}x{a.shape[3]} vs "
                         f"{b.shape[2]}x{b.shape[1]}x{b.shape[3]} (width x height x channels); "
                         "resize one of them (e.g. ImageScale) so both match")
    if a.shape[0] != b.shape[0]:
        if a.shape[0] == 1:
            a = a.expand(b.shape[0], -1, -1, -1)
        elif b.shape[0] == 1:
            b = b.expand(a.shape[0], -1, -1, -1)
        else:
            raise ValueError(f"batch sizes differ ({a.shape[0]} vs {b.shape[0]}); "
                             "use equal batches or a single image on one side")
    return a, b


def prepare_mask(mask: torch.Tensor | None, batch: int, height: int, width: int) -> torch.Tensor | None:
    """MASK -> [B, H, W] float64 weights at the image size, or None."""
    if mask is None:
        return None
    m = mask.to(torch.float64)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"expected MASK [B,H,W] or [H,W], got shape {tuple(mask.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("the mask has NaN or inf values; a mask holds weights in [0, 1]")
    if m.shape[-2:] != (height, width):
        m = F.interpolate(m[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    if m.shape[0] not in (1, batch):
        raise ValueError(f"mask batch {m.shape[0]} does not match image batch {batch}")
    m = m.expand(batch, -1, -1)
    if (m.flatten(1).sum(1) <= 0).any():
        raise ValueError("the mask selects no pixels for at least one image")
    return m


def _nonfinite_pixels(img: torch.Tensor) -> torch.Tensor:
    """[B, H, W] bool: pixels with a NaN or +-inf in any channel."""
    return ~torch.isfinite(img).all(-1)


def _within_ssim_reach(pixels: torch.Tensor) -> torch.Tensor:
    """[B, H, W] bool: pixels whose SSIM window (11x11 around them) holds one of `pixels`."""
    return F.max_pool2d(pixels[:, None].float(), _SSIM_SIZE, stride=1, padding=_SSIM_REACH)[:, 0] > 0


@dataclasses.dataclass(frozen=True)
class NonFiniteCounts:
    """Per image [B], pixels with a NaN or +-inf in any channel.

    reference / candidate: in that image, inside the compared region (PSNR and SSIM are NaN).
    near_mask: in either image, outside the mask but within SSIM's window of it (SSIM is NaN).
    outside_mask: in either image, farther outside the mask (ignored)."""
    reference: torch.Tensor
    candidate: torch.Tensor
    near_mask: torch.Tensor
    outside_mask: torch.Tensor

    def image(self, i: int) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)[i]) for f in dataclasses.fields(self)}


def count_nonfinite(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> NonFiniteCounts:
    """Where the non-finite pixels of a reference `a` and a candidate `b` lie (see NonFiniteCounts)."""
    a, b = broadcast_pair(a, b)
    bad_a, bad_b = _nonfinite_pixels(a), _nonfinite_pixels(b)
    m = prepare_mask(mask, a.shape[0], a.shape[1], a.shape[2])
    inside = torch.ones_like(bad_a) if m is None else m > 0
    near = _within_ssim_reach(inside) & ~inside
    either = bad_a | bad_b

    def count(t):
        return t.flatten(1).sum(1)
    return NonFiniteCounts(reference=count(bad_a & inside), candidate=count(bad_b & inside),
                           near_mask=count(either & near), outside_mask=count(either & ~inside & ~near))


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image PSNR in dB (data range 1): inf where the compared pixels are identical, NaN where
    one of them is not finite. Pixels outside the mask do not count, whatever their value."""
    a, b = broadcast_pair(a, b)
    err = (a.double() - b.double()) ** 2  # [B,H,W,C]; not finite wherever a pixel is NaN or +-inf
    m = prepare_mask(mask, a.shape[0], a.shape[1], a.shape[2])
    if m is None:
        mse = err.flatten(1).mean(1)
    else:
        w = m[..., None].expand_as(err)
        mse = torch.where(w > 0, err * w, 0).flatten(1).sum(1) / w.flatten(1).sum(1)
    db = -10 * torch.log10(mse.clamp_min(1e-300))
    db = torch.where(mse == 0, math.inf, db)
    return torch.where(torch.isfinite(mse), db, math.nan)


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM map [B, H, W] (mean over channels), Gaussian window 11 / sigma 1.5, reflect padding.

    NaN exactly where the window holds a non-finite pixel of either image. The Gaussian is
    separable: each strip of rows is filtered down its columns, then along its rows, both as
    products with a band matrix, in float64."""
    a, b = broadcast_pair(a, b)
    n, h, w, c = a.shape
    r = _SSIM_REACH
    if min(h, w) <= r:
        raise ValueError(f"images of {w}x{h} are too small for SSIM (need > {r} px)")
    dev = a.device
    # Reflect-padded row / column indices; columns are then zero-padded to whole blocks.
    rows_idx = torch.arange(-r, h + r, device=dev).abs()
    rows_idx = torch.where(rows_idx >= h, 2 * (h - 1) - rows_idx, rows_idx)
    cols_idx = torch.arange(-r, w + r, device=dev).abs()
    cols_idx = torch.where(cols_idx >= w, 2 * (w - 1) - cols_idx, cols_idx)
    blocks = -(-w // _SSIM_COLS)
    strip = min(_SSIM_ROWS, h)
    # x, y, x*x, y*y, x*y of one strip and its halo rows
    stats = torch.zeros(n, 5, c, strip + 2 * r, blocks * _SSIM_COLS + 2 * r, dtype=torch.float64, device=dev)
    col_band = _band(_SSIM_COLS, dev).T
    out = torch.empty(n, h, w, dtype=torch.float64, device=dev)
    for top in range(0, h, strip):
        rows = min(strip, h - top)
        q = stats[:, :, :, :rows + 2 * r]
        idx = rows_idx[top:top + rows + 2 * r]
        for slot, img in ((0, a), (1, b)):
            px = img.index_select(1, idx).index_select(2, cols_idx).permute(0, 3, 1, 2)
            q[:, slot, :, :, :w + 2 * r] = torch.nan_to_num(px, nan=0.0, posinf=0.0, neginf=0.0)
        torch.mul(q[:, 0], q[:, 0], out=q[:, 2])
        torch.mul(q[:, 1], q[:, 1], out=q[:, 3])
        torch.mul(q[:, 0], q[:, 1], out=q[:, 4])
        vert = torch.matmul(_band(rows, dev), q)                                  # [B, 5, C, rows, W']
        windows = vert.unfold(-1, _SSIM_COLS + 2 * r, _SSIM_COLS)                # [B, 5, C, rows, blocks, 74]
        blur = (windows.reshape(-1, _SSIM_COLS + 2 * r) @ col_band).view(*vert.shape[:-1], -1)[..., :w]
        mx, my, exx, eyy, exy = blur.unbind(1)
        mxy, mxx, myy = mx * my, mx * mx, my * my
        s = ((2 * mxy + _SSIM_C1) * (2 * (exy - mxy) + _SSIM_C2)) / (
            (mxx + myy + _SSIM_C1) * ((exx - mxx) + (eyy - myy) + _SSIM_C2))
        out[:, top:top + rows] = s.mean(1)
    bad = _nonfinite_pixels(a) | _nonfinite_pixels(b)
    if bad.any():
        out[_within_ssim_reach(bad)] = math.nan
    return out


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image SSIM; with a mask, the SSIM map is averaged over the masked pixels. NaN where the
    window of a compared pixel holds a non-finite pixel."""
    s = ssim_map(a, b)
    m = prepare_mask(mask, s.shape[0], s.shape[1], s.shape[2])
    if m is None:
        return s.flatten(1).mean(1)
    return torch.where(m > 0, s * m, 0).flatten(1).sum(1) / m.flatten(1).sum(1)


# Heat-map colour of a pixel that is NaN or +-inf in either image: blue, off the black-red-white ramp.
NONFINITE_COLOR = (0.0, 0.0, 1.0)


def difference_heatmap(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None,
                       gain: float | None = None) -> torch.Tensor:
    """IMAGE [B,H,W,3] visualising |a-b| (black = equal, through red and yellow to white).

    `gain` scales the absolute difference; by default the largest finite difference in the batch
    maps to white. Non-finite pixels are blue; pixels outside the mask are dimmed."""
    a, b = broadcast_pair(a, b)
    d = (a.float() - b.float()).abs().mean(-1)  # [B,H,W]
    finite = torch.isfinite(d)
    d = torch.where(finite, d, 0)
    if gain is None:
        peak = float(d.max())
        gain = 1.0 / peak if peak > 0 else 1.0
    v = (d * gain).clamp(0, 1)
    heat = torch.stack([(3 * v).clamp(0, 1), (3 * v - 1).clamp(0, 1), (3 * v - 2).clamp(0, 1)], dim=-1)
    heat = torch.where(finite[..., None], heat, heat.new_tensor(NONFINITE_COLOR))
    m = prepare_mask(mask, a.shape[0], a.shape[1], a.shape[2])
    if m is not None:
        heat = heat * (0.25 + 0.75 * m[..., None].float())
    return heat


def pooled_psnr(per_image_psnr: torch.Tensor) -> float:
    """PSNR of the batch's mean squared error: inf only when every image is identical, NaN when
    any image's PSNR is NaN."""
    p = per_image_psnr.double()
    if torch.isnan(p).any():
        return math.nan
    mse = (10 ** (-p / 10)).mean()
    return math.inf if float(mse) == 0 else float(-10 * torch.log10(mse))


# ---------------------------------------------------------------------------------------------
# Cost accounting: model FLOPs per call, counted from token counts and the architecture.
#
# A FlopCounter installs two keyed hooks on a model clone and adds up what actually executes:
#  - an `optimized_attention_override` (chaining any override already there): every attention
#    call counts its block's linear layers for the tokens it carries (2 FLOPs per multiply-add),
#    the block's modulation once per batch element, and the attention products of the kernel call
#    that really runs (4 * B * H * Lq * Lkv * Dh). A block that is skipped or forecast (no
#    attention call) therefore costs nothing, and a shorter sequence costs less.
#  - a DIFFUSION_MODEL wrapper, registered after the technique's own wrappers (so it only runs
#    when the network really runs): input/output projections per image token, the text
#    projection per text token and the timestep/vector embedders once per batch element.
# Exact for FLUX.1 (see tests); for Wan the cross-attention k/v projections are counted per image
# token rather than per text token, a small over-count.
# ---------------------------------------------------------------------------------------------
import dataclasses as _dataclasses

import torch.nn as _nn

COST_WRAPPER_KEY = "fastdit_cost"

# Modules outside the blocks, by family: applied per image token / per text token; every other
# linear layer outside the blocks runs once per batch element (timestep, guidance, pooled vector).
_EMBEDDER_ROLES = {
    "flux": {"image": ("img_in", "final_layer.linear"), "text": ("txt_in",)},
    "qwen_image": {"image": ("img_in", "proj_out"), "text": ("txt_in",)},
    "hunyuan_video": {"image": ("img_in", "final_layer.linear"), "text": ("txt_in",)},
    "wan": {"image": ("patch_embedding", "head.head"), "text": ("text_embedding",)},
}


def attention_flops(batch, heads, q_tokens, kv_tokens, head_dim):
    """FLOPs of softmax(QK^T)V: two products of 2 * Lq * Lkv * Dh FLOPs per batch and head."""
    return 4 * batch * heads * q_tokens * kv_tokens * head_dim


def _weighted_layers(module):
    """(name, multiply-adds per application) of every Linear / convolution inside `module`.

    A patch-embedding convolution (kernel == stride) does weight.numel() multiply-adds per output
    token, like a Linear."""
    for name, m in module.named_modules():
        if isinstance(m, (_nn.Linear, _nn.Conv1d, _nn.Conv2d, _nn.Conv3d)):
            yield name, m.weight.numel()


def _is_modulation(name):
    return any("mod" in part for part in name.split("."))  # img_mod, txt_mod, modulation, adaLN_modulation


@_dataclasses.dataclass(frozen=True)
class BlockCost:
    """Multiply-adds of one transformer block: per token of the joint sequence, and per batch
    element for the modulation computed from the conditioning vector."""
    token_macs: int
    call_macs: int

    @classmethod
    def of(cls, module):
        layers = list(_weighted_layers(module))
        # Two-stream (MMDiT) blocks hold one set of weights per stream; each token uses one set.
        streams = 2 if any(n.split(".")[0].startswith("txt") for n, _ in layers) else 1
        token = sum(macs for n, macs in layers if not _is_modulation(n))
        call = sum(macs for n, macs in layers if _is_modulation(n))
        return cls(token_macs=token // streams, call_macs=call)


@_dataclasses.dataclass(frozen=True)
class EmbedderCost:
    """Multiply-adds outside the blocks: per image token, per text token, per batch element."""
    image_macs: int
    text_macs: int
    call_macs: int

    @classmethod
    def of(cls, diffusion_model, family, block_modules):
        roles = _EMBEDDER_ROLES.get(family, {"image": (), "text": ()})
        inside = {id(m) for b in block_modules for m in b.modules()}
        image = text = call = 0
        modules = dict(diffusion_model.named_modules())
        for name, m in modules.items():
            if id(m) in inside or not isinstance(m, (_nn.Linear, _nn.Conv1d, _nn.Conv2d, _nn.Conv3d)):
                continue
            macs = m.weight.numel()
            if any(name == r or name.startswith(r + ".") for r in roles["image"]):
                image += macs
            elif any(name == r or name.startswith(r + ".") for r in roles["text"]):
                text += macs
            else:
                call += macs
        return cls(image_macs=image, text_macs=text, call_macs=call)


def _attention_shape(args, kwargs):
    """(batch, heads, q_tokens, kv_tokens, head_dim) of an optimized_attention call."""
    q = args[0] if args else kwargs["q"]
    k = args[1] if len(args) > 1 else kwargs["k"]
    heads = args[3] if len(args) > 3 else kwargs.get("heads")
    if kwargs.get("skip_reshape", False):  # [B, H, L, Dh]
        return q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.shape[3]
    return q.shape[0], heads, q.shape[1], k.shape[1], q.shape[2] // heads  # [B, L, H*Dh]


class FlopCounter:
    """Counts the model FLOPs a sampling run executes. Usage::

        counter = FlopCounter(model)
        counted = counter.install(model)     # a clone; sample with it
        ...; counter.flops, counter.model_calls
        counter.reset()
    """

    def __init__(self, model):
        from .adapters import diffusion_model_of, for_model
        adapter = for_model(model, technique="The FLOP counter")
        self.adapter = adapter
        self.blocks = {(b.kind, b.index): BlockCost.of(b.module) for b in adapter.blocks()}
        costs = list(self.blocks.values())
        self.mean_block = BlockCost(sum(c.token_macs for c in costs) // len(costs),
                                    sum(c.call_macs for c in costs) // len(costs))
        self.embedders = EmbedderCost.of(diffusion_model_of(model), adapter.family,
                                         [b.module for b in adapter.blocks()])
        self.reset()

    def reset(self):
        self.parts = {"attention": 0, "blocks": 0, "embedders": 0}
        self.model_calls = 0
        self._image_tokens = None

    @property
    def flops(self):
        return sum(self.parts.values())

    # -- what one model call costs ------------------------------------------------------------
    def count_model_call(self, batch, image_tokens, text_tokens):
        e = self.embedders
        self.parts["embedders"] += 2 * batch * (image_tokens * e.image_macs + text_tokens * e.text_macs + e.call_macs)
        self.model_calls += 1
        self._image_tokens = image_tokens

    def count_block(self, batch, tokens, transformer_options, self_attention):
        opts = transformer_options or {}
        key = (opts.get("block_type"), opts.get("block_index"))
        cost = self.blocks.get(key)
        if cost is None:
            # Models that do not report the block (Wan in 0.3.75): each self-attention over the
            # image tokens starts the next block; other calls (cross-attention, text refiners) only
            # count their attention products.
            if not (self_attention and tokens == self._image_tokens):
                return
            cost = self.mean_block
        self.parts["blocks"] += 2 * batch * (tokens * cost.token_macs + cost.call_macs)

    def count_attention(self, batch, heads, q_tokens, kv_tokens, head_dim):
        self.parts["attention"] += attention_flops(batch, heads, q_tokens, kv_tokens, head_dim)

    # -- hooks ---------------------------------------------------------------------------------
    def install(self, model):
        """A clone of `model` (a ModelPatcher, possibly already patched by a technique) whose
        executed model FLOPs are added to this counter."""
        import comfy.patcher_extension as pe
        m = model.clone()
        opts = m.model_options.setdefault("transformer_options", {})
        previous = opts.get("optimized_attention_override")
        counter = self
        ref_arg = {"flux": 5, "qwen_image": 5}.get(self.adapter.family)
        adapter = self.adapter

        def count_attention_override(func, *args, **kwargs):
            b, h, lq, lk, dh = _attention_shape(args, kwargs)
            counter.count_block(b, lq, kwargs.get("transformer_options"), self_attention=lq == lk)

            def counted(*a, **k):
                counter.count_attention(*_attention_shape(a, k))
                return func(*a, **k)
            if previous is not None:
                return previous(counted, *args, **kwargs)
            return counted(*args, **kwargs)

        def count_model_call(executor, *args, **kwargs):
            x, context = args[0], args[2] if len(args) > 2 else kwargs.get("context")
            refs = kwargs.get("ref_latents")
            if refs is None and ref_arg is not None and len(args) > ref_arg:
                refs = args[ref_arg]
            image = adapter.token_grid_size(x.shape) + sum(adapter.token_grid_size(r.shape) for r in (refs or []))
            counter.count_model_call(x.shape[0], image, context.shape[1] if context is not None else 0)
            return executor(*args, **kwargs)

        opts["optimized_attention_override"] = count_attention_override
        m.remove_wrappers_with_key(pe.WrappersMP.DIFFUSION_MODEL, COST_WRAPPER_KEY)
        m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, COST_WRAPPER_KEY, count_model_call)
        return m
