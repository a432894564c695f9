"""Test instrumentation: count the attention calls of each model call of a ModelPatcher clone."""
from typing import List, Tuple


def attention_traced(model, transformer_options: dict = None) -> Tuple[object, List[int]]:
    """A clone of `model` and a list that gets one entry per DIFFUSION_MODEL call holding the number
    of attention calls it made (one per block computed in full; a forecast block makes none).
    `transformer_options` entries are added to the clone's (e.g. a token set under test)."""
    import comfy.patcher_extension
    calls = []

    def step(executor, *args, **kwargs):
        calls.append(0)
        return executor(*args, **kwargs)

    def attention(func, *args, **kwargs):
        calls[-1] += 1
        return func(*args, **kwargs)

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_trace", step)
    opts = m.model_options.setdefault("transformer_options", {})
    opts["optimized_attention_override"] = attention
    opts.update(transformer_options or {})
    return m, calls
