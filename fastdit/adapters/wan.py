"""Wan 2.1 / 2.2: comfy.ldm.wan.model.WanModel (text-to-video and image-to-video variants).

Latents are 5-D [B, C, T, H, W]; patch (1, 2, 2). Self-attention runs over image tokens only (text
enters by cross-attention), so a "joint sequence" is the image tokens; ids (frame, row, col).
Blocks are replaceable as ("double_block", i) with {"img", "txt", "vec", "pe"} -> {"img"}.
"""
from .base import BlockRef, ModelAdapter, grid_len, stack_ids


class WanAdapter(ModelAdapter):
    family = "wan"
    display_name = "Wan 2.x"
    text_first = True

    @classmethod
    def matches(cls, dm):
        from comfy.ldm.wan.model import WanModel
        return isinstance(dm, WanModel)

    @property
    def patch_size(self):
        return tuple(self.model.patch_size)

    def blocks(self):
        return [BlockRef("double", i, b) for i, b in enumerate(self.model.blocks)]

    def token_grid(self, latent_shape):
        t, h, w = latent_shape[-3:]
        pt, ph, pw = self.patch_size
        return grid_len(t, pt), grid_len(h, ph), grid_len(w, pw)

    def token_layout(self, latent_shape, reference_shapes=(), n_text=0):
        return super().token_layout(latent_shape, reference_shapes, n_text=0)  # text is cross-attended

    def positions(self, frames, rows, cols, grid):
        return stack_ids(frames, rows, cols)


# ---------------------------------------------------------------------------------------------
# Feature-cache slots (HiCache): TaylorSeer's per-module slots applied to Wan's block
# WanAttentionBlock has three residual branches: self-attention (gate e[2]), cross-attention to
# the text (no gate) and the FFN (gate e[5]); one slot each. The math is re-expressed from the
# block's public submodules (pinned by tests/test_caching_blocks.py). The I2V cross-attention
# needs the CLIP-token count, which the block-replacement args lack: it comes from the
# DIFFUSION_MODEL call (`call_facts`). Wan 0.3.75 sets no block_index: callers key by BlockRef.
# ---------------------------------------------------------------------------------------------
import torch  # noqa: E402

from .cache_slots import CacheSlots, forward_params  # noqa: E402

WAN_SLOTS = ("self_attn", "cross_attn", "ffn")
WAN_FORWARD = ("x", "e", "freqs", "context", "context_img_len", "transformer_options")


def _wan_modulation(block, x, e):
    import comfy.model_management
    mod = comfy.model_management.cast_to(block.modulation, dtype=x.dtype, device=x.device)
    return (mod + e).chunk(6, dim=1) if e.ndim < 4 else (mod.unsqueeze(0) + e).unbind(2)


def wan_block_full(block, x, e, freqs, context, context_img_len=None, transformer_options={}):
    """WanAttentionBlock.forward; returns (x, {slot: branch output before its gate})."""
    from comfy.ldm.wan.model import repeat_e
    e = _wan_modulation(block, x, e)
    x = x.contiguous()
    attn = block.self_attn(torch.addcmul(repeat_e(e[0], x), block.norm1(x), 1 + repeat_e(e[1], x)),
                           freqs, transformer_options=transformer_options)
    x = torch.addcmul(x, attn, repeat_e(e[2], x))
    cross = block.cross_attn(block.norm3(x), context, context_img_len=context_img_len,
                             transformer_options=transformer_options)
    x = x + cross
    ffn = block.ffn(torch.addcmul(repeat_e(e[3], x), block.norm2(x), 1 + repeat_e(e[4], x)))
    x = torch.addcmul(x, ffn, repeat_e(e[5], x))
    return x, {"self_attn": attn, "cross_attn": cross, "ffn": ffn}


def wan_block_forecast(block, x, e, preds):
    from comfy.ldm.wan.model import repeat_e
    e = _wan_modulation(block, x, e)
    x = torch.addcmul(x, preds["self_attn"], repeat_e(e[2], x))
    x = x + preds["cross_attn"]
    return torch.addcmul(x, preds["ffn"], repeat_e(e[5], x))


class WanCacheSlots(CacheSlots):
    def streams(self, ref):
        return ("img",)

    def module_slots(self, ref):
        from comfy.ldm.wan.model import WanAttentionBlock, WanI2VCrossAttention, WanT2VCrossAttention
        b = ref.module
        ok = (type(b) is WanAttentionBlock and forward_params(b) == WAN_FORWARD
              and type(b.cross_attn) in (WanT2VCrossAttention, WanI2VCrossAttention))
        return WAN_SLOTS if ok else None

    def call_facts(self, call):
        clip_fea = call.get("clip_fea")
        return {"context_img_len": None if clip_fea is None else clip_fea.shape[-2]}

    def run_full(self, ref, args, facts):
        x, feats = wan_block_full(ref.module, args["img"], args["vec"], args["pe"], args["txt"],
                                  facts.get("context_img_len"), transformer_options=args.get("transformer_options") or {})
        return {"img": x}, feats

    def run_forecast(self, ref, args, preds, facts):
        return {"img": wan_block_forecast(ref.module, args["img"], args["vec"], preds)}


WanAdapter.cache_slots = WanCacheSlots
