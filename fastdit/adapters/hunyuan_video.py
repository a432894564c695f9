"""HunyuanVideo: comfy.ldm.hunyuan_video.model.HunyuanVideo (3-D patches, video latents).

Latents are 5-D [B, 16, T, H, W]; patch (1, 2, 2). The joint sequence is [image, text] in models
whose blocks carry flipped_img_txt=True (older ComfyUI) and [text, image] otherwise: the adapter
reads the order from the model's blocks. Image ids (frame, row, col); text ids zero. Double and
single blocks as FLUX.
"""
from .base import BlockRef, ModelAdapter, grid_len, stack_ids


class HunyuanVideoAdapter(ModelAdapter):
    family = "hunyuan_video"
    display_name = "HunyuanVideo"

    @property
    def text_first(self):
        from .flux import image_first_block
        return not image_first_block(self.model.double_blocks[0])

    @classmethod
    def matches(cls, dm):
        from comfy.ldm.hunyuan_video.model import HunyuanVideo
        return isinstance(dm, HunyuanVideo) and len(dm.patch_size) == 3

    @property
    def patch_size(self):
        return tuple(self.model.patch_size)

    def blocks(self):
        return ([BlockRef("double", i, b) for i, b in enumerate(self.model.double_blocks)]
                + [BlockRef("single", i, b) for i, b in enumerate(self.model.single_blocks)])

    def token_grid(self, latent_shape):
        t, h, w = latent_shape[-3:]
        pt, ph, pw = self.patch_size
        return grid_len(t, pt), grid_len(h, ph), grid_len(w, pw)

    def positions(self, frames, rows, cols, grid):
        return stack_ids(frames, rows, cols)

    # -----------------------------------------------------------------------------------------
    # Mixed-resolution forward for Fresco (comfy/ldm/hunyuan_video/model.py)
    # forward_orig patch-embeds a latent grid itself, so its body is re-expressed here from the
    # public submodules for a given token set; frames are kept, only the spatial axes change.
    # The patch-embedding convolution runs on each token's own 1x2x2 patch. A test pins it to
    # the real forward on the all-fine token set.
    # -----------------------------------------------------------------------------------------
    _MIXED_UNSUPPORTED = (("ref_latent", "an image-to-video reference latent"),
                          ("guiding_frame_index", "a guiding frame index"),
                          ("txt_byt5", "ByT5 glyph text (HunyuanVideo 1.5)"),
                          ("clip_fea", "CLIP vision features (HunyuanVideo 1.5)"))

    @property
    def hidden_size(self):
        return self.model.hidden_size

    def mixed_call(self, args):
        from .base import UnsupportedInputError
        if tuple(self.patch_size) != (1, 2, 2):
            raise UnsupportedInputError(f"patch size {tuple(self.patch_size)} (mixed resolution needs (1, 2, 2))")
        if args.get("control") is not None:
            raise UnsupportedInputError("ControlNet residuals assume the full token grid")
        for name, what in self._MIXED_UNSUPPORTED:
            if args.get(name) is not None:
                raise UnsupportedInputError(f"{what} is not supported")
        return args["x"], [], None

    def reference_placements(self, latent_shape, reference_shapes, method):
        return []

    def mixed_text_positions(self, n_text, grid, scale):
        import torch
        return torch.zeros(n_text, 3)

    def run_mixed(self, args, img, img_ids, txt_ids, n_target):
        import torch
        from comfy.ldm.flux.layers import timestep_embedding
        m = self.model
        opts = args["transformer_options"]
        timesteps, y, guidance = args["timestep"], args.get("y"), args.get("guidance")
        b, n, d = img.shape
        x = m.img_in.proj(img.reshape(b * n, d // 4, *self.patch_size)).reshape(b, n, -1)
        x = m.img_in.norm(x)
        vec = m.time_in(timestep_embedding(timesteps, 256, time_factor=1.0).to(x.dtype))
        time_r_in = getattr(m, "time_r_in", None)
        if time_r_in is not None and not args.get("disable_time_r", False):   # meanflow: next sigma
            at = torch.where(opts["sigmas"][0] == opts["sample_sigmas"])[0]
            if len(at) > 0:
                r = opts["sample_sigmas"][at[0] + 1].unsqueeze(0).to(device=timesteps.device, dtype=timesteps.dtype)
                vec_r = time_r_in(timestep_embedding(r, 256, time_factor=1000.0).to(x.dtype))
                vec = vec + vec_r if getattr(m.params, "meanflow_sum", False) else (vec + vec_r) / 2
        if m.vector_in is not None:
            vec = vec + m.vector_in(y[:, :m.params.vec_in_dim])
        if m.params.guidance_embed and guidance is not None:
            vec = vec + m.guidance_in(timestep_embedding(guidance, 256).to(x.dtype))
        txt_mask = args.get("attention_mask")
        if txt_mask is not None and not torch.is_floating_point(txt_mask):
            txt_mask = (txt_mask - 1).to(x.dtype) * torch.finfo(x.dtype).max
        txt = m.txt_in(args["context"], timesteps, txt_mask, transformer_options=opts)
        if getattr(m, "cond_type_embedding", None) is not None:
            kinds = torch.zeros_like(txt[:, :, 0], dtype=torch.long)
            txt = txt + m.cond_type_embedding.to(txt.device)(kinds).to(txt.dtype)
        text_first = self.text_first
        pe = m.pe_embedder(torch.cat((txt_ids, img_ids) if text_first else (img_ids, txt_ids), dim=1))
        attn_mask = None
        if txt_mask is not None:
            attn_mask = torch.zeros((1, 1, n + txt.shape[1]), dtype=x.dtype, device=x.device)
            text = slice(0, txt.shape[1]) if text_first else slice(n, None)
            attn_mask[:, 0, text] = txt_mask
        blocks_replace = opts.get("patches_replace", {}).get("dit", {})
        opts["total_blocks"], opts["block_type"] = len(m.double_blocks), "double"
        for i, block in enumerate(m.double_blocks):
            opts["block_index"] = i
            if ("double_block", i) in blocks_replace:
                def original(a, block=block):
                    img_out, txt_out = block(img=a["img"], txt=a["txt"], vec=a["vec"], pe=a["pe"], attn_mask=a["attention_mask"],
                                             modulation_dims_img=a["modulation_dims_img"],
                                             modulation_dims_txt=a["modulation_dims_txt"],
                                             transformer_options=a["transformer_options"])
                    return {"img": img_out, "txt": txt_out}
                out = blocks_replace[("double_block", i)](
                    {"img": x, "txt": txt, "vec": vec, "pe": pe, "attention_mask": attn_mask, "modulation_dims_img": None,
                     "modulation_dims_txt": None, "transformer_options": opts}, {"original_block": original})
                x, txt = out["img"], out["txt"]
            else:
                x, txt = block(img=x, txt=txt, vec=vec, pe=pe, attn_mask=attn_mask, modulation_dims_img=None,
                               modulation_dims_txt=None, transformer_options=opts)
        x = torch.cat((txt, x) if text_first else (x, txt), 1)
        opts["total_blocks"], opts["block_type"] = len(m.single_blocks), "single"
        for i, block in enumerate(m.single_blocks):
            opts["block_index"] = i
            if ("single_block", i) in blocks_replace:
                def original(a, block=block):
                    return {"img": block(a["img"], vec=a["vec"], pe=a["pe"], attn_mask=a["attention_mask"],
                                         modulation_dims=a["modulation_dims"], transformer_options=a["transformer_options"])}
                out = blocks_replace[("single_block", i)](
                    {"img": x, "vec": vec, "pe": pe, "attention_mask": attn_mask, "modulation_dims": None,
                     "transformer_options": opts}, {"original_block": original})
                x = out["img"]
            else:
                x = block(x, vec=vec, pe=pe, attn_mask=attn_mask, modulation_dims=None, transformer_options=opts)
        image = x[:, txt.shape[1]:] if text_first else x[:, :n]
        return m.final_layer(image, vec, modulation_dims=None)

# ---------------------------------------------------------------------------------------------
# Feature-cache slots (HiCache): module outputs before their gates, as in TaylorSeer's FLUX code
# HunyuanVideo's blocks are comfy.ldm.flux.layers blocks: 20x4 + 40x1 slots on the full model. The
# single-stream slot covers the joint sequence, whichever its order.
# ---------------------------------------------------------------------------------------------
from .flux import FluxCacheSlots  # noqa: E402

HunyuanVideoAdapter.cache_slots = FluxCacheSlots
