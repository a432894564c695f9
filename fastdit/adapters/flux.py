"""FLUX.1 (dev, schnell) and FLUX.1-Kontext: comfy.ldm.flux.model.Flux.

Joint sequence [text, target, references]; text tokens all at RoPE position (0, 0, 0); target
tokens at (0, row, col); Kontext references appended after the target with frame index 1
(method "offset", the Flux.1 default) at their own (row, col) grid.
"""
import torch

from .base import BlockRef, ModelAdapter, grid_len, stack_ids


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
    # Mixed-resolution forward (Fresco: ALGORITHMS §3.5, COMFY_INTERNALS §2.6)
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
        method = args.get("kwargs", {}).get("ref_latents_method", self.model.params.default_ref_method)
        if args.get("ref_latents") and method not in ("offset", "index", "uxo"):
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

    def run_mixed(self, args, img, img_ids, txt_ids):
        """The model on image tokens `img` [B, N, C*4] at `img_ids`; returns [B, N, C_out*4]."""
        m = self.model
        return m.forward_orig(img, img_ids, args["context"], txt_ids, args["timestep"], args.get("y"),
                              args.get("guidance"), None, args["transformer_options"], attn_mask=None)
