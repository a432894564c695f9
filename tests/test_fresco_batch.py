"""A Fresco sample does not depend on its batch-mates: each sample's token set is its own (ragged
batches run one model call per group of equal token count), its random draws are seeded from its
own noise, and an SNR-matched jump moves only the samples whose cells change, so every row of a
batch equals the same seed, prompt and noise sampled alone."""
import pytest
import torch

import comfy.patcher_extension
import comfy.sample
import comfy.samplers
from fastdit.adapters import call_arguments
from fastdit.dynres.fresco import fresco_sampler
from fastdit.dynres.noise_field import NoiseField
from fastdit.dynres.selection import random_score
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


def _batch_and_single_runs(family, options):
    """Max |batch row - single run| per row, and the traced calls of the batch."""
    model, seen = _traced(tm.make_model(family))
    latent = torch.zeros(tm.latent_shape(family, 24, 24, batch=BATCH))
    noise = comfy.sample.prepare_noise(latent, 5)                 # a different noise per row
    pos, neg = tm.conditioning(family, 2, batch=BATCH), tm.conditioning(family, 3, batch=BATCH)
    batch = _sample(model, noise, pos, neg, latent, options)
    mixed = [s for s in seen if s[0]]
    errors = []
    for b in range(BATCH):
        single = _sample(model, noise[b:b + 1], _row(pos, b), _row(neg, b), latent[b:b + 1], options)
        errors.append(float((batch[b:b + 1] - single).abs().max()))
        assert float(single.abs().max()) > 0.1
    return errors, mixed


def _changes_per_step(mixed):
    """Per consecutive pair of mixed calls' sets: which samples' masks changed."""
    keys = [k for k, _, _ in mixed]
    return [tuple(a != b for a, b in zip(before, after)) for before, after in zip(keys, keys[1:]) if before != after]


@pytest.mark.parametrize("family,preset", [("flux", "balanced"), ("flux", "fast"), ("qwen_image", "balanced"),
                                           ("hunyuan_video", "balanced")])
def test_every_row_of_a_batch_equals_its_single_run(family, preset):
    errors, mixed = _batch_and_single_runs(family, preset_options(preset))
    # the rows' selections differ: distinct cell masks, and different token counts at some step
    assert any(len(set(keys)) == BATCH for keys, _, _ in mixed)
    assert any(len(set(counts)) > 1 for _, counts, _ in mixed), "no ragged step: the test would not test groups"
    assert max(errors) < 1e-3, errors


@pytest.mark.parametrize("family,preset,option", [("flux", "balanced", {"selection": "random"}),
                                                  ("hunyuan_video", "balanced", {"selection": "random"}),
                                                  ("flux", "balanced", {"renoise": "independent"}),
                                                  ("qwen_image", "fast", {"renoise": "independent"})])
def test_random_ablations_draw_per_sample(family, preset, option):
    errors, mixed = _batch_and_single_runs(family, preset_options(preset, **option))
    assert any(len(set(keys)) == BATCH for keys, _, _ in mixed)
    assert max(errors) < 1e-3, errors


@pytest.mark.parametrize("option", [{}, {"renoise": "independent"}])
def test_snr_matched_moves_only_the_samples_that_change(option):
    """Steps where some samples' cells go up and others' do not: only the former jump to t'."""
    options = preset_options("custom", split=(5, 6, 7), first_ratio=0.3, ratio_per_step=0.05,
                             transition="snr_matched", **option)
    errors, mixed = _batch_and_single_runs("flux", options)
    assert any(0 < sum(changed) < BATCH for changed in _changes_per_step(mixed)), "no step changes only some samples"
    assert max(errors) < 1e-3, errors


def test_random_draws_depend_on_the_sample_alone():
    """A row's draws are those of the row alone; equal rows draw alike, different rows differently."""
    rows = torch.randn(3, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = NoiseField(torch.stack([rows[0], rows[1], rows[0]]), seed=5)
    alone = [NoiseField(rows[b:b + 1], seed=5) for b in range(2)]
    fresh = batch.fresh([0, 0, 0])
    assert torch.equal(fresh[0], alone[0].fresh(0)[0]) and torch.equal(fresh[1], alone[1].fresh(0)[0])
    assert torch.equal(fresh[0], fresh[2]) and not torch.allclose(fresh[0], fresh[1])
    assert not torch.equal(batch.fresh([1, 0, 0])[0], fresh[0])          # a new draw per resolution change
    score = random_score((1, 4, 4), batch.sample_seeds(3), "cpu")
    assert torch.equal(score[1:2], random_score((1, 4, 4), alone[1].sample_seeds(3), "cpu"))
    assert torch.equal(score[0], score[2]) and not torch.equal(score[0], score[1])
    assert not torch.equal(score, random_score((1, 4, 4), batch.sample_seeds(4), "cpu"))    # per step


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
