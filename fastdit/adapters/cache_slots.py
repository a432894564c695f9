"""What a model family tells feature caches (HiCache) about its blocks.

Each family file ends with a "feature-cache slots" section that subclasses `CacheSlots` and sets
`<Family>Adapter.cache_slots` to it. Two granularities:

* block: a block's output stream(s) minus its input, per stream (`streams`); works for any block
  through `original_block`, no model math needed;
* module: per-module slots as in TaylorSeer's and HiCache's FLUX code, e.g. FLUX double block = img_attn,
  img_mlp, txt_attn, txt_mlp before their gates. A full compute runs the block with its module
  outputs exposed (`run_full`); a forecast recomputes only the modulation from `vec` and adds
  gate * forecast (`run_forecast`): no attention, no MLP. Families re-express the block math
  from the block's public submodules; tests pin it to the real forward.

A family only claims module slots for the exact block class, with the exact `forward` parameters,
it re-expresses: a ComfyUI release that changes a block's interface gets block granularity (and a
warning) instead of silently different math.
"""
import inspect


def forward_params(block):
    """Names of the parameters of the block's forward (without self)."""
    return tuple(inspect.signature(type(block).forward).parameters)[1:]


class CacheSlots:
    def __init__(self, adapter):
        self.adapter = adapter

    def streams(self, ref):
        """Keys of the block replacement's output dict (its residual streams)."""
        return ("img", "txt") if ref.kind == "double" else ("img",)

    def module_slots(self, ref):
        """Names of the module slots of this block, or None when its class is not one the family
        re-expresses (callers then fall back to block granularity)."""
        return None

    def call_facts(self, call):
        """Per-call facts a block needs that the block-replacement args lack, from the
        DIFFUSION_MODEL call's arguments by name (`call_arguments`)."""
        return {}

    def module_math_refusal(self, call, facts):
        """Why this call's blocks cannot run the re-expressed module math (they then use block
        granularity), or None. Blocks of newer releases run transformer_options["patches"]
        "attn1_patch" / "attn1_output_patch" inside attention, which the module math does not."""
        patches = (call.get("transformer_options") or {}).get("patches") or {}
        found = [name for name in ("attn1_patch", "attn1_output_patch") if patches.get(name)]
        return f"attention patches ({', '.join(found)})" if found else None

    def run_full(self, ref, args, facts):
        """Run the block; return (output dict, {slot: pre-gate module output})."""
        raise NotImplementedError

    def run_forecast(self, ref, args, preds, facts):
        """Apply forecast module outputs `preds` ({slot: tensor}) with freshly computed gates."""
        raise NotImplementedError
