"""The DIFFUSION_MODEL wrapper that runs a DiT on a token set (Fresco, SpecEdit).

A sampler puts the current TokenSet into `transformer_options[LAYOUT_KEY]` (its own copy of the
run's model_options). Per model call the wrapper gathers each group's mixed sequence from the
carrier latent it receives (fine tokens of up cells, coarse tokens of the rest, reference latents
laid out alike), asks the family adapter to run the model on it with matching RoPE ids, and
scatters the velocities back to a carrier-shaped output (a coarse token's velocity fills its cell;
that is the fill of the tokens not recomputed at full resolution). A group's call sees its own
TokenSet under LAYOUT_KEY. When every token of the set (or of a group) is fine the model's own
forward runs, so other wrappers and patches see a normal call. Plain joint attention, no mask or
reweighting (RALU).

Model batch rows are cond / uncond chunks of the latent batch: row r belongs to sample r % B.

torch.compile: ComfyUI compiles the diffusion model, so this wrapper runs inside the compiled
region. Everything data-dependent (call counts, rows, ids, group indices) is computed in
`prepare_call`, which the compiler skips; the traced part holds only tensor work whose sizes come
from tensor shapes, so a new set of the same structure reuses the compiled graph.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..adapters import UnsupportedInputError, UnsupportedModelError, call_arguments, for_model
from ...kernels.tokens import gather_tokens, scatter_tokens
from .grid import as5d
from .token_set import TokenSet

LAYOUT_KEY = "fastdit_dynres"      # transformer_options: the call's TokenSet
WRAPPER_KEY = "fastdit_fresco"     # DIFFUSION_MODEL wrapper key
MIXED_FAMILIES = {"flux": "FLUX.1 (dev / schnell / Kontext)", "qwen_image": "Qwen-Image / Qwen-Image-Edit",
                  "hunyuan_video": "HunyuanVideo"}


def mixed_adapter(model, technique: str = "Fresco"):
    """The family adapter of `model` if it can run mixed token sets, else a clear error."""
    adapter = for_model(model, technique=technique)
    if adapter.family not in MIXED_FAMILIES:
        raise UnsupportedModelError(
            f"{technique} runs mixed-resolution token sets on {', '.join(MIXED_FAMILIES.values())}; "
            f"this model is {adapter.display_name}.")
    return adapter


@dataclass
class GroupCall:
    """One group's share of a model call: its samples' model rows (`index`, None for the whole
    batch; `order` puts the groups' outputs back in batch order), its set, and its rows and ids."""
    tokens: TokenSet
    index: Optional[torch.Tensor]
    rows: Optional[torch.Tensor] = None
    ref_rows: tuple = ()
    img_ids: Optional[torch.Tensor] = None
    txt_ids: Optional[torch.Tensor] = None


@torch.compiler.disable
def prepare_call(token_set: TokenSet, call: dict, record: bool = True, with_fine: bool = True):
    """(groups, order) for one model call: GroupCall per group and the permutation restoring batch
    order (None for a single group). `record` notes the call's token counts on the set; with
    `with_fine` False, all-fine groups get no rows (the model's own forward runs them)."""
    if record:
        token_set.record_call(call)
    if token_set.all_fine and not with_fine:
        return None, None
    adapter = token_set.adapter
    try:
        x, references, method = adapter.mixed_call(call)
    except UnsupportedInputError as e:
        raise UnsupportedInputError(
            f"Fresco cannot run its low-resolution steps with this input: {e}. Remove it, or sample "
            f"this model with a normal KSampler.") from e
    batch = x.shape[0]
    samples = token_set.up.shape[0] if token_set.up is not None else 1
    if batch % samples:
        raise ValueError(f"Fresco: model batch {batch} is not a multiple of the latent batch {samples}")
    context = call.get("context")
    n_text = 0 if context is None else context.shape[1]
    placements = adapter.reference_placements(x.shape, [r.shape for r in references], method)
    groups, seen = [], []
    whole = len(token_set.groups()) == 1
    for members, group in token_set.groups():
        index = None
        if not whole:
            index = torch.tensor([c * samples + s for c in range(batch // samples) for s in members],
                                 device=x.device)
            seen.append(index)
        g = GroupCall(group, index)
        if with_fine or not group.all_fine:
            rows_in = batch if whole else len(index)
            ids = [group.target_ids()] + [group.reference_ids(r.shape, p) for r, p in zip(references, placements)]
            g.rows = group.rows
            g.ref_rows = tuple(group.reference_rows(r.shape) for r in references)
            g.img_ids = torch.cat([i.to(x.device).repeat(rows_in // i.shape[0], 1, 1) for i in ids], 1)
            txt_ids = adapter.mixed_text_positions(n_text, group.grid.fine_grid, group.scale)
            g.txt_ids = txt_ids.to(x.device)[None].repeat(rows_in, 1, 1)
        groups.append(g)
    order = None if whole else torch.argsort(torch.cat(seen))
    return groups, order


def _take(value, index, batch):
    """`value` with its batch rows `index` (tensors whose first dim is the model batch; lists and
    the extra-keyword dict entry by entry); anything else unchanged."""
    if torch.is_tensor(value):
        return value[index] if value.ndim and value.shape[0] == batch else value
    if isinstance(value, (list, tuple)):
        return type(value)(_take(v, index, batch) for v in value)
    if isinstance(value, dict):
        return {k: _take(v, index, batch) for k, v in value.items()}
    return value


def _group_call(call: dict, group: GroupCall, batch: int) -> dict:
    """The call's arguments for one group: its rows, and its own set under LAYOUT_KEY."""
    if group.index is None:
        return call
    sub = {k: (v if k == "transformer_options" else _take(v, group.index, batch)) for k, v in call.items()}
    sub["transformer_options"] = dict(call.get("transformer_options") or {}, **{LAYOUT_KEY: group.tokens})
    return sub


def _run_group(diffusion_model, call: dict, group: GroupCall):
    """Velocity (carrier-shaped) of the model on one group's mixed token set."""
    adapter = group.tokens.adapter
    x, references, _ = adapter.mixed_call(call)
    f = group.tokens.grid.factor
    x5 = as5d(x)
    rows = group.rows
    tokens = [gather_tokens(x5, rows, f)]
    for ref, ref_rows in zip(references, group.ref_rows):
        tokens.append(gather_tokens(as5d(ref).to(x.dtype), ref_rows, f))
    img = torch.cat(tokens, 1)
    out = adapter.run_mixed(call, img, group.img_ids, group.txt_ids, n_target=rows.shape[1])[:, :rows.shape[1]]
    shape = (x5.shape[0], out.shape[-1] // 4, *x5.shape[2:])
    velocity = scatter_tokens(out, rows, shape, f)
    return velocity if x.ndim == 5 else velocity.squeeze(2)


def _run_fine(executor: Callable, call: dict):
    """The model's own forward (the rest of the wrapper chain) on a call given by name."""
    named = dict(call)
    extra = named.pop("kwargs", None) or {}
    return executor(**named, **extra)


def run_groups(diffusion_model, call: dict, groups: list, order, executor: Optional[Callable] = None):
    """The call's output from its groups, in batch order; all-fine groups run `executor` if given."""
    batch = call["x"].shape[0]
    outs = []
    for group in groups:
        sub = _group_call(call, group, batch)
        if group.rows is None:
            outs.append(_run_fine(executor, sub))
        else:
            outs.append(_run_group(diffusion_model, sub, group))
    if order is None:
        return outs[0]
    return torch.cat(outs, 0)[order]


def mixed_forward(diffusion_model, call: dict, layout: TokenSet):
    """Velocity (carrier-shaped) of the model on the token set `layout` (every group, all-fine
    ones included, through the mixed path)."""
    groups, order = prepare_call(layout, call, record=False)
    return run_groups(diffusion_model, call, groups, order)


def mixed_resolution_wrapper(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: the model on the TokenSet under LAYOUT_KEY (none: a normal call)."""
    dm = executor.class_obj
    call = call_arguments(dm, args, kwargs)
    token_set = (call.get("transformer_options") or {}).get(LAYOUT_KEY)
    if token_set is None:
        return executor(*args, **kwargs)
    groups, order = prepare_call(token_set, call, with_fine=False)
    if groups is None:
        return executor(*args, **kwargs)
    return run_groups(dm, call, groups, order, executor)
