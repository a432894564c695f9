"""The token-set layer: keys, groups of a ragged batch, and the forward per group."""
import pytest
import torch

import comfy.patcher_extension as pe
from fastdit.adapters import call_arguments
from fastdit.tokens import LAYOUT_KEY, CellGrid, TokenSet, mixed_adapter, mixed_forward, mixed_resolution_wrapper
from fastdit.testing import tiny_models as tm

GRID = CellGrid(1, 16, 16, 2)   # 4 x 4 cells


def _up(*cells, batch_cells=None):
    """Cell masks [B, 1, 4, 4]: one list of up cell indices per sample."""
    up = torch.zeros(len(cells), 1, 4, 4, dtype=torch.bool)
    for b, idx in enumerate(cells):
        up[b].view(-1)[list(idx)] = True
    return up


def _set(up, positions="coarse", grid=GRID):
    return TokenSet(None, grid, up, positions)


def test_equal_masks_have_equal_keys():
    a, b = _set(_up([0, 1, 5])), _set(_up([0, 1, 5]))
    assert a is not b and a.key == b.key and a.sample_keys == b.sample_keys
    assert _set(_up([0, 1, 5], [2, 3])).key == _set(_up([0, 1, 5], [2, 3])).key


def test_a_different_set_at_the_same_count_has_another_key():
    a, b = _set(_up([0, 1, 5])), _set(_up([0, 1, 6]))
    assert a.token_counts == b.token_counts and a.key != b.key
    assert _set(_up([])).key != a.key
    assert _set(_up([0, 1, 5]), "fine").key != a.key            # other RoPE units: other features
    assert _set(_up([0]), grid=CellGrid(1, 16, 20, 2)).key != _set(_up([0])).key


def test_per_sample_sets_are_part_of_the_key():
    ab, ba, ac = _set(_up([0], [1])), _set(_up([1], [0])), _set(_up([0], [2]))
    assert len({ab.key, ba.key, ac.key}) == 3
    assert ab.sample_keys[0] == ac.sample_keys[0] == ba.sample_keys[1] != ab.sample_keys[1]


def test_every_all_fine_set_of_a_size_has_one_key():
    full = list(range(16))
    keys = {_set(None).key, _set(_up(full)).key, _set(_up(full, full, full)).key,
            _set(_up(full), "fine").key, TokenSet(None, CellGrid(1, 16, 16, 4), None).key}
    assert len(keys) == 1
    assert _set(None, grid=CellGrid(1, 16, 18, 2)).key not in keys
    assert _set(_up(full, [0])).key not in keys                    # one sample not all fine


def test_groups_of_a_ragged_set():
    up = _up([0, 1], [0, 1, 2, 3], [4, 5], list(range(16)))
    ts = _set(up)
    assert ts.token_counts == (16 + 2 * 3, 16 + 4 * 3, 16 + 2 * 3, 64) and ts.ragged
    groups = ts.groups()
    assert [members for members, _ in groups] == [(0, 2), (1,), (3,)]
    assert [g.token_counts for _, g in groups] == [(22, 22), (28,), (64,)]
    assert groups[2][1].all_fine and not groups[0][1].all_fine
    assert groups[0][1].key == _set(up[[0, 2]]).key
    assert [g.rows.shape[:2] for _, g in groups[:2]] == [(2, 22), (1, 28)]
    uniform = _set(_up([0, 1], [4, 5]))
    assert uniform.groups() == [((0, 1), uniform)] and not uniform.ragged
    with pytest.raises(ValueError, match="groups"):
        GRID.rows(up)


def _inputs(batch, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, 16, 16, generator=gen)
    context = torch.randn(batch, 8, 64, generator=gen)
    kwargs = dict(y=torch.randn(batch, 32, generator=gen), guidance=torch.full((batch,), 3.5))
    return x, torch.full((batch,), 0.7), context, kwargs


def _rows(kwargs, index):
    return {k: v[index] for k, v in kwargs.items()}


def test_a_ragged_set_runs_each_sample_as_it_would_run_alone():
    """Two samples of different counts, cond and uncond rows (model batch 4): every row equals the
    mixed forward of its sample alone; the call's token counts are noted per group."""
    model = tm.make_model("flux")
    dm, ad = model.model.diffusion_model, mixed_adapter(model)
    up = _up([0, 1, 2, 7], [3, 9]).to(torch.bool)
    ts = TokenSet(ad, GRID, up)
    x, t, context, kwargs = _inputs(4)
    with torch.no_grad():
        got = mixed_forward(dm, call_arguments(dm, (x, t, context), dict(kwargs, transformer_options={})), ts)
        for b in range(4):
            alone = TokenSet(ad, GRID, up[b % 2:b % 2 + 1])
            idx = [b]
            want = mixed_forward(dm, call_arguments(dm, (x[idx], t[idx], context[idx]),
                                                    dict(_rows(kwargs, idx), transformer_options={})), alone)
            assert torch.allclose(got[idx], want, atol=1e-5), (b, float((got[idx] - want).abs().max()))
    ts.record_call({"x": x, "context": context})
    assert [tuple(c) for c in ts.calls] == [(8, 16 + 4 * 3, 64, 2), (8, 16 + 2 * 3, 64, 2)]


def test_an_all_fine_group_runs_the_models_own_forward_and_sees_its_set():
    model = tm.make_model("flux")
    dm, ad = model.model.diffusion_model, mixed_adapter(model)
    up = _up(list(range(16)), [3, 9])
    ts = TokenSet(ad, GRID, up)
    seen = []

    def inner(executor, *args, **kwargs):     # runs after the token-set wrapper: sees each group's call
        call = call_arguments(executor.class_obj, args, kwargs)
        seen.append((call["x"].shape[0], call["transformer_options"][LAYOUT_KEY].key))
        return executor(*args, **kwargs)

    opts = {LAYOUT_KEY: ts}
    pe.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "tokens", mixed_resolution_wrapper, opts)
    pe.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "spy", inner, opts)
    x, t, context, kwargs = _inputs(2)
    with torch.no_grad():
        got = dm(x, t, context, transformer_options=opts, **kwargs)
        fine = dm(x[:1], t[:1], context[:1], transformer_options={}, **_rows(kwargs, [0]))
        partial = mixed_forward(dm, call_arguments(dm, (x[1:], t[1:], context[1:]),
                                                   dict(_rows(kwargs, [1]), transformer_options={})),
                                TokenSet(ad, GRID, up[1:]))
    assert seen == [(1, TokenSet(ad, GRID, None).key)]           # only the all-fine group reaches the model
    assert torch.equal(got[:1], fine)
    assert torch.allclose(got[1:], partial, atol=1e-6)
    assert [tuple(c) for c in ts.calls] == [(8, 64, 64, 1), (8, 16 + 2 * 3, 64, 1)]


def test_fresco_publishes_a_key_that_follows_the_set():
    """Through comfy.sample: one key for the whole full-resolution stage, the same key for calls
    with the same masks (also in a second run), another whenever any sample's set changes."""
    import comfy.sample
    import comfy.samplers
    from fastdit.dynres.fresco import fresco_sampler
    from fastdit.dynres.stages import StagePlan, preset_options
    seen = []

    def spy(executor, *args, **kwargs):
        ts = call_arguments(executor.class_obj, args, kwargs)["transformer_options"][LAYOUT_KEY]
        seen.append((ts.key, ts.sample_keys, ts.stage, ts.all_fine))
        return executor(*args, **kwargs)

    model = tm.make_model("flux").clone()
    model.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test_spy", spy)
    latent = torch.zeros(tm.latent_shape("flux", 24, 24, batch=2))
    options, steps = preset_options("balanced"), 12
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).cpu()
    pos, neg = tm.conditioning("flux", 2, batch=2), tm.conditioning("flux", 3, batch=2)
    for _ in range(2):
        comfy.sample.sample_custom(model, comfy.sample.prepare_noise(latent, 3), 2.0, fresco_sampler(options), sigmas,
                                   pos, neg, latent, disable_pbar=True, seed=3)
    first, second = seen[:steps], seen[steps:]
    assert len(first) == len(second) == steps and [s[0] for s in first] == [s[0] for s in second]
    plan = StagePlan.for_steps(steps, options)
    stage3 = {s[0] for s in first if s[2] == 3}
    assert len(stage3) == 1 and all(s[3] for s in first if s[2] == 3)
    assert len({s[0] for s in first if s[2] == 1}) == 1                      # the coarse stage: one set
    for a in first:
        for b in first:
            assert (a[0] == b[0]) == (a[1] == b[1] or (a[3] and b[3]))
    assert len({s[0] for s in first}) == 2 + plan.progressive                # a new set at every change
