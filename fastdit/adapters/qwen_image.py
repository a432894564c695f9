"""Qwen-Image and Qwen-Image-Edit: comfy.ldm.qwen_image.model.QwenImageTransformer2DModel.

Latents are 5-D [B, 16, 1, H, W]. Joint sequence [text, target, references]. Image positions are
CENTRED on their own grid: row - rows // 2. Text positions start at max(rows // 2, cols // 2) of the
TARGET grid and run along all three axes. Edit references (method "index") take frame index 1, 2, ...
"""
import torch

from .base import BlockRef, ModelAdapter, grid_len, stack_ids


class QwenImageAdapter(ModelAdapter):
    family = "qwen_image"
    display_name = "Qwen-Image / Qwen-Image-Edit"
    text_first = True

    @classmethod
    def matches(cls, dm):
        from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
        return isinstance(dm, QwenImageTransformer2DModel)

    @property
    def patch_size(self):
        return self.model.patch_size

    def blocks(self):
        return [BlockRef("double", i, b) for i, b in enumerate(self.model.transformer_blocks)]

    def token_grid(self, latent_shape):
        h, w = latent_shape[-2:]
        return 1, grid_len(h, self.patch_size), grid_len(w, self.patch_size)

    def positions(self, frames, rows, cols, grid):
        # centring uses the FULL grid: never re-centre a crop or a subset
        return stack_ids(frames, torch.as_tensor(rows, dtype=torch.float32) - grid[1] // 2,
                         torch.as_tensor(cols, dtype=torch.float32) - grid[2] // 2)

    def text_positions(self, n_text, grid):
        start = round(max(grid[1] // 2, grid[2] // 2))
        return torch.arange(start, start + n_text, dtype=torch.float32)[:, None].repeat(1, 3)


# ---------------------------------------------------------------------------------------------
# Feature-cache slots (HiCache, SVD-Cache): ALGORITHMS §0.3
# QwenImageTransformerBlock math re-expressed from its public submodules with the module outputs
# exposed (pinned to the real forward by tests/test_caching_blocks.py). For Qwen-Image-Edit the img
# stream holds target + reference tokens; both are cached (the reference part costs as much
# memory as the target part for a same-size reference).
# ---------------------------------------------------------------------------------------------
from .cache_slots import CacheSlots, forward_params  # noqa: E402

QWEN_SLOTS = ("img_attn", "img_mlp", "txt_attn", "txt_mlp")
QWEN_FORWARD = ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "temb", "image_rotary_emb",
                "transformer_options")


def _qwen_modulate(x, mod_params):
    shift, scale, gate = torch.chunk(mod_params, 3, dim=-1)
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1)), gate.unsqueeze(1)


def _qwen_gates(mod_params):
    first, second = mod_params.chunk(2, dim=-1)
    return torch.chunk(first, 3, dim=-1)[2].unsqueeze(1), torch.chunk(second, 3, dim=-1)[2].unsqueeze(1)


def qwen_block_full(block, img, txt, temb, pe, transformer_options={}):
    """QwenImageTransformerBlock.forward; returns (img, txt, {slot: module output before its gate})."""
    img_mod1, img_mod2 = block.img_mod(temb).chunk(2, dim=-1)
    txt_mod1, txt_mod2 = block.txt_mod(temb).chunk(2, dim=-1)
    img_modulated, img_gate1 = _qwen_modulate(block.img_norm1(img), img_mod1)
    txt_modulated, txt_gate1 = _qwen_modulate(block.txt_norm1(txt), txt_mod1)
    img_attn, txt_attn = block.attn(hidden_states=img_modulated, encoder_hidden_states=txt_modulated,
                                    encoder_hidden_states_mask=None, image_rotary_emb=pe,
                                    transformer_options=transformer_options)
    img = img + img_gate1 * img_attn
    txt = txt + txt_gate1 * txt_attn
    img_modulated2, img_gate2 = _qwen_modulate(block.img_norm2(img), img_mod2)
    img_mlp = block.img_mlp(img_modulated2)
    img = torch.addcmul(img, img_gate2, img_mlp)
    txt_modulated2, txt_gate2 = _qwen_modulate(block.txt_norm2(txt), txt_mod2)
    txt_mlp = block.txt_mlp(txt_modulated2)
    txt = torch.addcmul(txt, txt_gate2, txt_mlp)
    return img, txt, {"img_attn": img_attn, "img_mlp": img_mlp, "txt_attn": txt_attn, "txt_mlp": txt_mlp}


def qwen_block_forecast(block, img, txt, temb, preds):
    img_gate1, img_gate2 = _qwen_gates(block.img_mod(temb))
    txt_gate1, txt_gate2 = _qwen_gates(block.txt_mod(temb))
    img = img + img_gate1 * preds["img_attn"]
    txt = txt + txt_gate1 * preds["txt_attn"]
    img = torch.addcmul(img, img_gate2, preds["img_mlp"])
    txt = torch.addcmul(txt, txt_gate2, preds["txt_mlp"])
    return img, txt


class QwenImageCacheSlots(CacheSlots):
    def module_slots(self, ref):
        from comfy.ldm.qwen_image.model import QwenImageTransformerBlock
        b = ref.module
        ok = type(b) is QwenImageTransformerBlock and forward_params(b) == QWEN_FORWARD
        return QWEN_SLOTS if ok else None

    def run_full(self, ref, args, facts):
        img, txt, feats = qwen_block_full(ref.module, args["img"], args["txt"], args["vec"], args["pe"],
                                          transformer_options=args.get("transformer_options") or {})
        return {"img": img, "txt": txt}, feats

    def run_forecast(self, ref, args, preds, facts):
        img, txt = qwen_block_forecast(ref.module, args["img"], args["txt"], args["vec"], preds)
        return {"img": img, "txt": txt}


QwenImageAdapter.cache_slots = QwenImageCacheSlots
