"""The DIFFUSION_MODEL wrapper that runs a DiT on a mixed-resolution token set (Fresco).

The sampler puts the current MixedLayout into `transformer_options[LAYOUT_KEY]` (its own copy of
the run's model_options). Per model call the wrapper gathers the mixed sequence from the carrier
latent it receives (fine tokens of up cells, coarse tokens of the rest, reference latents laid out
alike), asks the family adapter to run the model on it with matching RoPE ids, and scatters the
velocities back to a carrier-shaped output (a coarse token's velocity fills its cell). When every
cell is fine the model's own forward runs untouched, so other wrappers and patches see a normal
call. Plain joint attention, no mask or reweighting (RALU).
"""
import torch

from ..adapters import UnsupportedInputError, UnsupportedModelError, call_arguments, for_model
from ...kernels.tokens import gather_tokens, scatter_tokens
from .layout import as5d

LAYOUT_KEY = "fastdit_dynres"      # transformer_options: the current MixedLayout
WRAPPER_KEY = "fastdit_fresco"     # DIFFUSION_MODEL wrapper key
MIXED_FAMILIES = {"flux": "FLUX.1 (dev / schnell / Kontext)", "qwen_image": "Qwen-Image / Qwen-Image-Edit",
                  "hunyuan_video": "HunyuanVideo"}


def mixed_adapter(model, technique="Fresco"):
    """The family adapter of `model` if it can run mixed token sets, else a clear error."""
    adapter = for_model(model, technique=technique)
    if adapter.family not in MIXED_FAMILIES:
        raise UnsupportedModelError(
            f"{technique} runs mixed-resolution token sets on {', '.join(MIXED_FAMILIES.values())}; "
            f"this model is {adapter.display_name}.")
    return adapter


def mixed_resolution_wrapper(executor, *args, **kwargs):
    dm = executor.class_obj
    call = call_arguments(dm, args, kwargs)
    layout = (call.get("transformer_options") or {}).get(LAYOUT_KEY)
    if layout is None:
        return executor(*args, **kwargs)
    layout.record_call(call)
    if layout.all_fine:
        return executor(*args, **kwargs)
    return mixed_forward(dm, call, layout)


def mixed_forward(diffusion_model, call, layout):
    """Velocity (carrier-shaped) of the model on the layout's mixed token set."""
    adapter = layout.adapter
    try:
        x, references, method = adapter.mixed_call(call)
    except UnsupportedInputError as e:
        raise UnsupportedInputError(
            f"Fresco cannot run its low-resolution steps with this input: {e}. Remove it, or sample "
            f"this model with a normal KSampler.") from e
    f = layout.grid.factor
    x5 = as5d(x)
    batch = x5.shape[0]
    if batch % layout.up.shape[0]:
        raise ValueError(f"Fresco: model batch {batch} is not a multiple of the latent batch {layout.up.shape[0]}")
    rows = layout.rows
    tokens = [gather_tokens(x5, rows, f)]
    ids = [layout.target_ids()]
    placements = adapter.reference_placements(x.shape, [r.shape for r in references], method)
    for ref, placement in zip(references, placements):
        tokens.append(gather_tokens(as5d(ref).to(x.dtype), layout.reference_rows(ref.shape), f))
        ids.append(layout.reference_ids(ref.shape, placement))
    img = torch.cat(tokens, 1)
    img_ids = torch.cat([i.to(x.device).repeat(batch // i.shape[0], 1, 1) for i in ids], 1)
    context = call.get("context")
    n_text = 0 if context is None else context.shape[1]
    txt_ids = adapter.mixed_text_positions(n_text, layout.grid.fine_grid, layout.scale)
    txt_ids = txt_ids.to(x.device)[None].repeat(batch, 1, 1)
    out = adapter.run_mixed(call, img, img_ids, txt_ids, n_target=rows.shape[1])[:, :rows.shape[1]]
    shape = (batch, out.shape[-1] // 4, *x5.shape[2:])
    velocity = scatter_tokens(out, rows, shape, f)
    return velocity if x.ndim == 5 else velocity.squeeze(2)
