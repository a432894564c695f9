"""A Fresco sample does not depend on its batch-mates: each sample's token set is its own (ragged
batches run one model call per group of equal token count), so every row of a batch equals the
same seed, prompt and noise sampled alone."""
import pytest
import torch

import comfy.patcher_extension
import comfy.sample
import comfy.samplers
from fastdit.adapters import call_arguments
from fastdit.dynres.fresco import fresco_sampler
from fastdit.dynres.stages import preset_options
from fastdit.tokens import LAYOUT_KEY
from fastdit.testing import tiny_models as tm

STEPS, CFG, BATCH = 12, 3.0, 3


def _row(cond, b):
    """Sample b of a batched CONDITIONING."""
    return [[c[b:b + 1], {k: (v[b:b + 1] if torch.is_tensor(v) and v.shape[0] == BATCH else v)
                          for k, v in extras.items()}] for c, extras in cond]


def _traced(model):
    """A clone noting, per model call, the token set's per-sample keys and token counts."""
    seen = []

    def spy(executor, *args, **kwargs):
        call = call_arguments(executor.class_obj, args, kwargs)
        tokens = call["transformer_options"][LAYOUT_KEY]
        seen.append((tokens.sample_keys, tokens.token_counts, call["x"].shape[0]))
        return executor(*args, **kwargs)

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_spy", spy)
    return m, seen


def _sample(model, noise, pos, neg, latent, options):
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", STEPS).cpu()
    return comfy.sample.sample_custom(model, noise, CFG, fresco_sampler(options), sigmas, pos, neg, latent,
                                      disable_pbar=True, seed=5)


@pytest.mark.parametrize("family,preset", [("flux", "balanced"), ("flux", "fast"), ("qwen_image", "balanced"),
                                           ("hunyuan_video", "balanced")])
def test_every_row_of_a_batch_equals_its_single_run(family, preset):
    model, seen = _traced(tm.make_model(family))
    options = preset_options(preset)
    latent = torch.zeros(tm.latent_shape(family, 24, 24, batch=BATCH))
    noise = comfy.sample.prepare_noise(latent, 5)                 # a different noise per row
    pos, neg = tm.conditioning(family, 2, batch=BATCH), tm.conditioning(family, 3, batch=BATCH)
    batch = _sample(model, noise, pos, neg, latent, options)
    mixed = [s for s in seen if s[0]]
    # the rows' selections differ: distinct cell masks, and different token counts at some step
    assert any(len(set(keys)) == BATCH for keys, _, _ in mixed)
    assert any(len(set(counts)) > 1 for _, counts, _ in mixed), "no ragged step: the test would not test groups"
    for b in range(BATCH):
        seen.clear()
        single = _sample(model, noise[b:b + 1], _row(pos, b), _row(neg, b), latent[b:b + 1], options)
        err = float((batch[b:b + 1] - single).abs().max())
        assert err < 1e-3, (b, err)
        assert float(single.abs().max()) > 0.1


def test_a_batch_whose_rows_share_their_counts_runs_one_call_per_step():
    """Equal token counts in every sample: one model call of the whole batch, as before."""
    model, seen = _traced(tm.make_model("flux"))
    calls = []

    def count(executor, *args, **kwargs):
        calls.append(args[0].shape[0])
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_count", count)
    latent = torch.zeros(tm.latent_shape("flux", 16, 16, batch=2))
    noise = comfy.sample.prepare_noise(latent, 1)[:1].repeat(2, 1, 1, 1)      # two identical rows
    pos, neg = tm.conditioning("flux", 2), tm.conditioning("flux", 3)
    out = _sample(model, noise, pos, neg, latent, preset_options("balanced"))
    assert torch.equal(out[0], out[1])
    assert calls == [4] * STEPS                                    # cond + uncond of 2 samples per step
    assert all(counts[0] == counts[-1] for _, counts, _ in seen)
