"""FLUX.1 (dev, schnell) and FLUX.1-Kontext: comfy.ldm.flux.model.Flux.

Joint sequence [text, target, references]; text tokens all at RoPE position (0, 0, 0); target
tokens at (0, row, col); Kontext references appended after the target with frame index 1
(method "offset", the Flux.1 default) at their own (row, col) grid.
"""
import torch

from .base import BlockRef, ModelAdapter, grid_len, reference_method, stack_ids


class FluxAdapter(ModelAdapter):
    family = "flux"
    display_name = "FLUX.1 (dev / schnell / Kontext)"
    text_first = True

    @classmethod
    def matches(cls, dm):
        from comfy.ldm.flux.model import Flux
        if type(dm) is not Flux:  # Chroma, Flux.2 variants etc. are other classes or params
            return False
        params = dm.params
        return len(params.axes_dim) == 3 and not getattr(params, "global_modulation", False)

    @property
    def patch_size(self):
        return self.model.patch_size

    def blocks(self):
        return ([BlockRef("double", i, b) for i, b in enumerate(self.model.double_blocks)]
                + [BlockRef("single", i, b) for i, b in enumerate(self.model.single_blocks)])

    def token_grid(self, latent_shape):
        h, w = latent_shape[-2:]
        return 1, grid_len(h, self.patch_size), grid_len(w, self.patch_size)

    def positions(self, frames, rows, cols, grid):
        return stack_ids(frames, rows, cols)  # frame axis = Kontext image index (0 = target)

    def text_positions(self, n_text, grid):
        return torch.zeros(n_text, 3)

    # -----------------------------------------------------------------------------------------
    # Mixed-resolution forward for Fresco (positions after RALU, arXiv 2507.08422; comfy/ldm/flux/model.py)
    # `forward_orig` takes any token sequence with float RoPE ids, so the model's own block loop
    # runs the mixed set; embedders and final layer are per token.
    # -----------------------------------------------------------------------------------------
    @property
    def hidden_size(self):
        return self.model.hidden_size

    def mixed_call(self, args):
        """Check a DIFFUSION_MODEL call (`args`: its arguments by name) for what a mixed token set
        cannot carry, and return (latent, references, reference method)."""
        from .base import UnsupportedInputError
        if args.get("control") is not None:
            raise UnsupportedInputError("ControlNet residuals assume the full token grid")
        if args.get("kwargs", {}).get("attention_mask") is not None:
            raise UnsupportedInputError("an attention mask is sized for the full token grid")
        if args["transformer_options"].get("rope_options") is not None:
            raise UnsupportedInputError("RoPE scaling options (set_model_rope_options) change the positions")
        method = reference_method(self.model, args, "offset")
        if args.get("ref_latents") and method not in ("offset", "index", "uxo"):
            # (index_timestep_zero needs FLUX.2's global modulation; FLUX.1 models cannot run it)
            raise UnsupportedInputError(f"reference latent method {method!r} (supported: offset, index, uxo)")
        return args["x"], list(args.get("ref_latents") or []), method

    def reference_placements(self, latent_shape, reference_shapes, method):
        """(frame index, row offset, col offset) in tokens of each reference latent, as Flux._forward
        places them ("offset": tiled on frame 1; "index": frame k * ref_index_scale; "uxo")."""
        from .base import tile_offset
        p = self.patch_size
        h_len, w_len = self.token_grid(latent_shape)[1:]
        placed, h, w, index = [], 0, 0, 0
        for shape in reference_shapes:
            rh, rw = shape[-2:]
            h_off = w_off = 0
            if method == "index":
                index += self.model.params.ref_index_scale
            elif method == "uxo":
                index, h_off, w_off = 0, h_len * p + h, w_len * p + w
                h, w = h + rh, w + rw
            else:
                index = 1
                h_off, w_off, h, w = tile_offset(h, w, rh, rw)
            placed.append((index, (h_off + p // 2) // p, (w_off + p // 2) // p))
        return placed

    def mixed_text_positions(self, n_text, grid, scale):
        return self.text_positions(n_text, grid)

    def run_mixed(self, args, img, img_ids, txt_ids, n_target):
        """The model on image tokens `img` [B, N, C*4] at `img_ids` (the first `n_target` of them the
        target's, then references); returns [B, N, C_out*4]."""
        m = self.model
        return m.forward_orig(img, img_ids, args["context"], txt_ids, args["timestep"], args.get("y"),
                              guidance=args.get("guidance"), control=None,
                              transformer_options=args["transformer_options"], attn_mask=None)

# ---------------------------------------------------------------------------------------------
# Feature-cache slots (HiCache): module outputs before their gates, as in TaylorSeer's FLUX code
# DoubleStreamBlock / SingleStreamBlock math re-expressed from their public submodules, with the
# module outputs exposed; tests/test_caching_blocks.py pins it to the real forwards. HunyuanVideo
# uses the same block classes (image-first joint order, optional per-token modulation dims).
# ---------------------------------------------------------------------------------------------
from .cache_slots import CacheSlots, forward_params  # noqa: E402

FLUX_DOUBLE_SLOTS = ("img_attn", "img_mlp", "txt_attn", "txt_mlp")
FLUX_SINGLE_SLOTS = ("total",)
FLUX_DOUBLE_FORWARD = ("img", "txt", "vec", "pe", "attn_mask", "modulation_dims_img", "modulation_dims_txt",
                       "transformer_options")
FLUX_SINGLE_FORWARD = ("x", "vec", "pe", "attn_mask", "modulation_dims", "transformer_options")


def image_first_block(block):
    """Whether a double block attends over [image, text] (older HunyuanVideo blocks carry
    flipped_img_txt=True) rather than [text, image] (FLUX; every block once the flag is gone)."""
    return bool(getattr(block, "flipped_img_txt", False))


def _gateable(t, modulation_dims):
    # apply_mod scales in place when modulation_dims is set: keep the cached feature intact
    return t if modulation_dims is None else t.clone()


def _stream_qkv(norm1, attn, x, mod, modulation_dims, num_heads):
    from comfy.ldm.flux.layers import apply_mod
    qkv = attn.qkv(apply_mod(norm1(x), (1 + mod.scale), mod.shift, modulation_dims))
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.norm(q, k, v)
    return q, k, v


def flux_double_full(block, img, txt, vec, pe, attn_mask=None, mod_dims_img=None, mod_dims_txt=None,
                     transformer_options={}):
    """DoubleStreamBlock.forward; returns (img, txt, {slot: module output before its gate})."""
    from comfy.ldm.flux import layers
    img_mod1, img_mod2 = block.img_mod(vec)
    txt_mod1, txt_mod2 = block.txt_mod(vec)
    img_q, img_k, img_v = _stream_qkv(block.img_norm1, block.img_attn, img, img_mod1, mod_dims_img, block.num_heads)
    txt_q, txt_k, txt_v = _stream_qkv(block.txt_norm1, block.txt_attn, txt, txt_mod1, mod_dims_txt, block.num_heads)
    image_first = image_first_block(block)
    first, second = ((img_q, img_k, img_v), (txt_q, txt_k, txt_v)) if image_first else \
        ((txt_q, txt_k, txt_v), (img_q, img_k, img_v))
    q, k, v = (torch.cat((a, b), dim=2) for a, b in zip(first, second))
    attn = layers.attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=transformer_options)
    split = img.shape[1] if image_first else txt.shape[1]
    if image_first:
        img_attn, txt_attn = attn[:, :split], attn[:, split:]
    else:
        txt_attn, img_attn = attn[:, :split], attn[:, split:]
    feats = {"img_attn": block.img_attn.proj(img_attn)}
    img += layers.apply_mod(_gateable(feats["img_attn"], mod_dims_img), img_mod1.gate, None, mod_dims_img)
    feats["img_mlp"] = block.img_mlp(layers.apply_mod(block.img_norm2(img), (1 + img_mod2.scale), img_mod2.shift, mod_dims_img))
    img += layers.apply_mod(_gateable(feats["img_mlp"], mod_dims_img), img_mod2.gate, None, mod_dims_img)
    feats["txt_attn"] = block.txt_attn.proj(txt_attn)
    txt += layers.apply_mod(_gateable(feats["txt_attn"], mod_dims_txt), txt_mod1.gate, None, mod_dims_txt)
    feats["txt_mlp"] = block.txt_mlp(layers.apply_mod(block.txt_norm2(txt), (1 + txt_mod2.scale), txt_mod2.shift, mod_dims_txt))
    txt += layers.apply_mod(_gateable(feats["txt_mlp"], mod_dims_txt), txt_mod2.gate, None, mod_dims_txt)
    if txt.dtype == torch.float16:
        txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
    return img, txt, feats


def _add_gated(stream, pred, gate, modulation_dims):
    """stream += gate * pred in place: one fused multiply-add (a single rounding, no product
    tensor) when the gate is per sample; ComfyUI's apply_mod for per-token modulation dims."""
    if modulation_dims is None:
        return stream.addcmul_(pred, gate)
    from comfy.ldm.flux.layers import apply_mod
    stream += apply_mod(pred, gate, None, modulation_dims)
    return stream


def modulation_gates(modulation, vec):
    """The gate of each ModulationOut of `modulation(vec)` (two for a double block, one for a single
    block). Only the gate rows of the modulation linear run where they can run alone (gates.py); a
    forecast step uses no shift or scale."""
    from .gates import linear_chunks
    n = getattr(modulation, "multiplier", None)
    lin = getattr(modulation, "lin", None)
    if n in (3, 6) and lin is not None:
        x = vec[:, None, :] if vec.ndim == 2 else vec  # as Modulation.forward
        gates = linear_chunks(lin, torch.nn.functional.silu(x), n, range(2, n, 3))
        if gates is not None:
            return gates
    return [m.gate for m in modulation(vec) if m is not None]


def flux_double_forecast(block, img, txt, vec, preds, mod_dims_img=None, mod_dims_txt=None):
    """A double block on a forecast step: the gates from vec, then stream += gate * forecast."""
    img_gate1, img_gate2 = modulation_gates(block.img_mod, vec)
    txt_gate1, txt_gate2 = modulation_gates(block.txt_mod, vec)
    img = _add_gated(img, preds["img_attn"], img_gate1, mod_dims_img)
    img = _add_gated(img, preds["img_mlp"], img_gate2, mod_dims_img)
    txt = _add_gated(txt, preds["txt_attn"], txt_gate1, mod_dims_txt)
    txt = _add_gated(txt, preds["txt_mlp"], txt_gate2, mod_dims_txt)
    if txt.dtype == torch.float16:
        txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
    return img, txt


def flux_single_full(block, x, vec, pe, attn_mask=None, mod_dims=None, transformer_options={}):
    """SingleStreamBlock.forward; returns (x, {"total": linear2(cat(attn, mlp)) before the gate})."""
    from comfy.ldm.flux import layers
    mod, _ = block.modulation(vec)
    mlp_first = getattr(block, "mlp_hidden_dim_first", block.mlp_hidden_dim)
    qkv, mlp = torch.split(block.linear1(layers.apply_mod(block.pre_norm(x), (1 + mod.scale), mod.shift, mod_dims)),
                           [3 * block.hidden_size, mlp_first], dim=-1)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = block.norm(q, k, v)
    attn = layers.attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=transformer_options)
    total = block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2))
    x += layers.apply_mod(_gateable(total, mod_dims), mod.gate, None, mod_dims)
    if x.dtype == torch.float16:
        x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x, {"total": total}


def flux_single_forecast(block, x, vec, preds, mod_dims=None):
    gate, = modulation_gates(block.modulation, vec)
    x = _add_gated(x, preds["total"], gate, mod_dims)
    if x.dtype == torch.float16:
        x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


class FluxCacheSlots(CacheSlots):
    """Slots of comfy.ldm.flux.layers blocks (FLUX.1, Kontext; HunyuanVideo reuses them).

    Block-replacement args: FLUX passes "attn_mask"; HunyuanVideo "attention_mask" and the
    per-token modulation dims ("modulation_dims_img"/"_txt" for double, "modulation_dims" for
    single blocks). Kontext reference tokens sit in the img stream, so they are cached with it."""

    def module_slots(self, ref):
        from comfy.ldm.flux.layers import DoubleStreamBlock, SingleStreamBlock
        b = ref.module
        if (ref.kind == "double" and type(b) is DoubleStreamBlock and b.modulation
                and forward_params(b) == FLUX_DOUBLE_FORWARD):
            return FLUX_DOUBLE_SLOTS
        if (ref.kind == "single" and type(b) is SingleStreamBlock and b.modulation is not None
                and forward_params(b) == FLUX_SINGLE_FORWARD):
            return FLUX_SINGLE_SLOTS
        return None

    @staticmethod
    def _mask(args):
        return args["attn_mask"] if "attn_mask" in args else args.get("attention_mask")

    def run_full(self, ref, args, facts):
        opts = args.get("transformer_options") or {}
        if ref.kind == "double":
            img, txt, feats = flux_double_full(ref.module, args["img"], args["txt"], args["vec"], args["pe"],
                                               self._mask(args), args.get("modulation_dims_img"),
                                               args.get("modulation_dims_txt"), transformer_options=opts)
            return {"img": img, "txt": txt}, feats
        x, feats = flux_single_full(ref.module, args["img"], args["vec"], args["pe"], self._mask(args),
                                    args.get("modulation_dims"), transformer_options=opts)
        return {"img": x}, feats

    def run_forecast(self, ref, args, preds, facts):
        if ref.kind == "double":
            img, txt = flux_double_forecast(ref.module, args["img"], args["txt"], args["vec"], preds,
                                            args.get("modulation_dims_img"), args.get("modulation_dims_txt"))
            return {"img": img, "txt": txt}
        return {"img": flux_single_forecast(ref.module, args["img"], args["vec"], preds, args.get("modulation_dims"))}


FluxAdapter.cache_slots = FluxCacheSlots
