"""Qwen-Image and Qwen-Image-Edit: comfy.ldm.qwen_image.model.QwenImageTransformer2DModel.

Latents are 5-D [B, 16, 1, H, W]. Joint sequence [text, target, references]. Image positions are
CENTRED on their own grid: row - rows // 2. Text positions start at max(rows // 2, cols // 2) of the
TARGET grid and run along all three axes. Edit references (method "index") take frame index 1, 2, ...
"""
import torch

from .base import BlockRef, ModelAdapter, grid_len, reference_method, stack_ids


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

    # -----------------------------------------------------------------------------------------
    # Mixed-resolution forward for Fresco (comfy/ldm/qwen_image/model.py)
    # _forward builds positions from the full grid inside, so the middle of it is re-expressed
    # here from the model's public submodules (img_in, txt_norm, txt_in, time_text_embed,
    # pe_embedder, transformer_blocks, norm_out, proj_out), block patches included. A test pins
    # it to the real forward on the all-fine token set.
    # -----------------------------------------------------------------------------------------
    @property
    def hidden_size(self):
        return self.model.inner_dim

    def mixed_call(self, args):
        from .base import UnsupportedInputError
        if args.get("control") is not None:
            raise UnsupportedInputError("ControlNet residuals assume the full token grid")
        method = reference_method(self.model, args, "index")
        if args.get("ref_latents") and method not in ("index", "index_timestep_zero", "offset"):
            raise UnsupportedInputError(f"reference latent method {method!r} "
                                        "(supported: index, index_timestep_zero, offset)")
        if args.get("ref_latents") and method == "index_timestep_zero" and \
                "timestep_zero_index" not in forward_params(self.model.transformer_blocks[0]):
            raise UnsupportedInputError("reference latent method 'index_timestep_zero': this ComfyUI's Qwen-Image "
                                        "model does not implement it (update ComfyUI)")
        return args["x"], list(args.get("ref_latents") or []), method

    def reference_placements(self, latent_shape, reference_shapes, method):
        """(frame index, row offset, col offset) in tokens of each reference, as _forward places
        them ("index": frame k, each centred on its own grid; otherwise tiled on frame 1)."""
        from .base import tile_offset
        p = self.patch_size
        placed, h, w, index = [], 0, 0, 0
        for shape in reference_shapes:
            rh, rw = shape[-2:]
            h_off = w_off = 0
            if method in ("index", "index_timestep_zero"):
                index += 1
            else:
                index = 1
                h_off, w_off, h, w = tile_offset(h, w, rh, rw)
            placed.append((index, (h_off + p // 2) // p, (w_off + p // 2) // p))
        return placed

    def mixed_text_positions(self, n_text, grid, scale):
        """Text ids start after the image's half-extent, in the units the image ids use."""
        start = max(grid[1] // 2, grid[2] // 2) * scale
        return (start + torch.arange(n_text, dtype=torch.float32))[:, None].repeat(1, 3)

    def run_mixed(self, args, img, img_ids, txt_ids, n_target):
        m = self.model
        opts = args["transformer_options"]
        context, timestep, guidance = args["context"], args["timesteps"], args.get("guidance")
        txt_mask = additive_text_mask(args.get("attention_mask"), img.dtype)
        block_extra = {}
        if reference_method(m, args, "index") == "index_timestep_zero":
            # references are modulated at timestep 0 (as the model's _forward does for this method)
            timestep = torch.cat([timestep, timestep * 0], dim=0)
            block_extra["timestep_zero_index"] = n_target
        pe = m.pe_embedder(torch.cat((txt_ids, img_ids), dim=1)).to(img.dtype).contiguous()
        hidden = m.img_in(img)
        txt = m.txt_in(m.txt_norm(context))
        if guidance is not None:   # older releases: an optional guidance embedding
            temb = m.time_text_embed(timestep, guidance * 1000, hidden)
        elif args.get("additional_t_cond") is not None:
            temb = m.time_text_embed(timestep, hidden, args["additional_t_cond"])
        else:
            temb = m.time_text_embed(timestep, hidden)
        blocks_replace = opts.get("patches_replace", {}).get("dit", {})
        block_patches = opts.get("patches", {}).get("double_block", [])
        opts["total_blocks"] = len(m.transformer_blocks)
        opts["block_type"] = "double"
        for i, block in enumerate(m.transformer_blocks):
            opts["block_index"] = i
            if ("double_block", i) in blocks_replace:
                def original(a, block=block):
                    txt_out, img_out = block(hidden_states=a["img"], encoder_hidden_states=a["txt"],
                                             encoder_hidden_states_mask=txt_mask, temb=a["vec"],
                                             image_rotary_emb=a["pe"], transformer_options=a["transformer_options"],
                                             **block_extra)
                    return {"txt": txt_out, "img": img_out}
                out = blocks_replace[("double_block", i)](
                    {"img": hidden, "txt": txt, "vec": temb, "pe": pe, "transformer_options": opts},
                    {"original_block": original})
                hidden, txt = out["img"], out["txt"]
            else:
                txt, hidden = block(hidden_states=hidden, encoder_hidden_states=txt, encoder_hidden_states_mask=txt_mask,
                                    temb=temb, image_rotary_emb=pe, transformer_options=opts, **block_extra)
            for patch in block_patches:
                out = patch({"img": hidden, "txt": txt, "x": args["x"], "block_index": i, "transformer_options": opts})
                hidden, txt = out["img"], out["txt"]
        if block_extra:
            temb = temb.chunk(2, dim=0)[0]
        return m.proj_out(m.norm_out(hidden, temb))

# ---------------------------------------------------------------------------------------------
# Feature-cache slots (HiCache): module outputs before their gates, as in TaylorSeer's FLUX code
# QwenImageTransformerBlock math re-expressed from its public submodules with the module outputs
# exposed (pinned to the real forward by tests/test_caching_blocks.py). For Qwen-Image-Edit the img
# stream holds target + reference tokens; both are cached (the reference part costs as much
# memory as the target part for a same-size reference).
# ---------------------------------------------------------------------------------------------
from .cache_slots import CacheSlots, forward_params  # noqa: E402

QWEN_SLOTS = ("img_attn", "img_mlp", "txt_attn", "txt_mlp")
QWEN_FORWARDS = (
    ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "temb", "image_rotary_emb",
     "transformer_options"),
    # blocks that also take timestep_zero_index (only set by the index_timestep_zero reference method,
    # which the module math does not follow: such calls use block granularity)
    ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "temb", "image_rotary_emb",
     "timestep_zero_index", "transformer_options"),
)


def additive_text_mask(mask, dtype):
    """A 0/1 text mask as the additive float mask Qwen-Image's attention adds (0 keep, -max drop);
    float masks are already additive."""
    if mask is None or torch.is_floating_point(mask):
        return mask
    return (mask - 1).to(dtype) * torch.finfo(dtype).max


def _qwen_modulate(x, mod_params):
    shift, scale, gate = torch.chunk(mod_params, 3, dim=-1)
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1)), gate.unsqueeze(1)


def _qwen_gates(mod_params):
    first, second = mod_params.chunk(2, dim=-1)
    return torch.chunk(first, 3, dim=-1)[2].unsqueeze(1), torch.chunk(second, 3, dim=-1)[2].unsqueeze(1)


def _gate_image(block, feature, stream, gate):
    """stream + gate * feature on the image stream, as the block does it (its own _apply_gate where it
    has one, which rounds like addcmul)."""
    apply = getattr(block, "_apply_gate", None)
    return apply(feature, stream, gate) if apply is not None else stream + gate * feature


def qwen_block_full(block, img, txt, temb, pe, text_mask=None, transformer_options={}):
    """QwenImageTransformerBlock.forward; returns (img, txt, {slot: module output before its gate})."""
    img_mod1, img_mod2 = block.img_mod(temb).chunk(2, dim=-1)
    txt_mod1, txt_mod2 = block.txt_mod(temb).chunk(2, dim=-1)
    img_modulated, img_gate1 = _qwen_modulate(block.img_norm1(img), img_mod1)
    txt_modulated, txt_gate1 = _qwen_modulate(block.txt_norm1(txt), txt_mod1)
    img_attn, txt_attn = block.attn(hidden_states=img_modulated, encoder_hidden_states=txt_modulated,
                                    encoder_hidden_states_mask=text_mask, image_rotary_emb=pe,
                                    transformer_options=transformer_options)
    img = _gate_image(block, img_attn, img, img_gate1)
    txt = txt + txt_gate1 * txt_attn
    img_modulated2, img_gate2 = _qwen_modulate(block.img_norm2(img), img_mod2)
    img_mlp = block.img_mlp(img_modulated2)
    img = torch.addcmul(img, img_gate2, img_mlp)
    txt_modulated2, txt_gate2 = _qwen_modulate(block.txt_norm2(txt), txt_mod2)
    txt_mlp = block.txt_mlp(txt_modulated2)
    txt = torch.addcmul(txt, txt_gate2, txt_mlp)
    return img, txt, {"img_attn": img_attn, "img_mlp": img_mlp, "txt_attn": txt_attn, "txt_mlp": txt_mlp}


def _qwen_stream_gates(modulation, temb):
    """(gate1, gate2) of one stream's modulation (nn.Sequential(SiLU, Linear) -> 6 chunks) at temb:
    only the gate rows of the linear run where they can run alone (gates.py)."""
    from .gates import linear_chunks
    if (isinstance(modulation, torch.nn.Sequential) and len(modulation) == 2
            and type(modulation[0]) is torch.nn.SiLU):
        gates = linear_chunks(modulation[1], modulation[0](temb), 6, (2, 5))
        if gates is not None:
            return tuple(g.unsqueeze(1) for g in gates)
    return _qwen_gates(modulation(temb))


def qwen_block_forecast(block, img, txt, temb, preds):
    img_gate1, img_gate2 = _qwen_stream_gates(block.img_mod, temb)
    txt_gate1, txt_gate2 = _qwen_stream_gates(block.txt_mod, temb)
    img = _gate_image(block, preds["img_attn"], img, img_gate1)
    txt = txt + txt_gate1 * preds["txt_attn"]
    img = torch.addcmul(img, img_gate2, preds["img_mlp"])
    txt = torch.addcmul(txt, txt_gate2, preds["txt_mlp"])
    return img, txt


class QwenImageCacheSlots(CacheSlots):
    def module_slots(self, ref):
        from comfy.ldm.qwen_image.model import QwenImageTransformerBlock
        b = ref.module
        ok = type(b) is QwenImageTransformerBlock and forward_params(b) in QWEN_FORWARDS
        return QWEN_SLOTS if ok else None

    def call_facts(self, call):
        """The text mask, which the block replacement's args lack."""
        return {"text_mask": additive_text_mask(call.get("attention_mask"), call["x"].dtype)}

    def module_math_refusal(self, call, facts):
        if reference_method(self.adapter.model, call, "index") == "index_timestep_zero":
            return "the index_timestep_zero reference method"   # per-token timesteps reach the blocks by closure
        return super().module_math_refusal(call, facts)

    def run_full(self, ref, args, facts):
        img, txt, feats = qwen_block_full(ref.module, args["img"], args["txt"], args["vec"], args["pe"],
                                          facts.get("text_mask"),
                                          transformer_options=args.get("transformer_options") or {})
        return {"img": img, "txt": txt}, feats

    def run_forecast(self, ref, args, preds, facts):
        img, txt = qwen_block_forecast(ref.module, args["img"], args["txt"], args["vec"], preds)
        return {"img": img, "txt": txt}


QwenImageAdapter.cache_slots = QwenImageCacheSlots
