"""Fresco's algebra: Haar/Hadamard round trips, the unified noise field across scales, the cell
layout and its token rows, transitions, selection and the stage plan."""
import pytest
import torch

from fastdit.dynres import haar, selection, transition
from fastdit.dynres.layout import CellGrid, row_coordinates
from fastdit.dynres.noise_field import NoiseField, coarse_noise, coarse_start, detail_noise
from fastdit.dynres.stages import PRESETS, FrescoOptions, StagePlan, parse_split, preset_options
from kernels.tokens import gather_tokens_torch, scatter_tokens_torch


def test_h4_is_orthonormal_and_its_own_inverse():
    assert torch.allclose(haar.H4 @ haar.H4, torch.eye(4), atol=1e-7)
    assert torch.allclose(haar.H4, haar.H4.T)


def test_haar_round_trip_and_dc():
    x = torch.randn(2, 3, 10, 14)
    coef = haar.split_2x2(x)
    assert torch.allclose(haar.merge_2x2(coef), x, atol=1e-6)
    assert torch.allclose(coef[..., 0, :, :], haar.haar_dc(x, 2), atol=1e-6)          # DC = sum / 2
    # the general-f synthesis is the H4 inverse for f = 2: DC and the field's details give x back
    assert torch.allclose(haar.haar_synthesis(haar.haar_dc(x, 2), haar.haar_detail(x, 2), 2), x, atol=1e-6)
    assert torch.allclose(haar.haar_synthesis(haar.haar_dc(x[..., :8, :12], 4), haar.haar_detail(x[..., :8, :12], 4), 4),
                          x[..., :8, :12], atol=1e-6)


@pytest.mark.parametrize("f", [2, 4])
def test_coarse_noise_of_the_field_has_unit_variance(f):
    field = torch.randn(64, 4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    c = coarse_noise(field, CellGrid.of(field.shape, f))
    assert abs(float(c.std()) - 1.0) < 0.03 and abs(float(c.mean())) < 0.03
    assert abs(float(haar.block_mean(field, f).std()) - 1.0 / f) < 0.02   # plain pooling would shrink it


@pytest.mark.parametrize("f", [2, 4])
def test_children_noise_reproduces_the_fine_field_exactly(f):
    """Upsampling pure noise at t = 1 with the field's details gives back E itself."""
    field = torch.randn(2, 4, 1, 16, 24)
    grid = CellGrid.of(field.shape, f)
    coarse = grid.all_coarse().expand(2, *grid.cell_shape)
    carrier = grid.merge(field, grid.spread(coarse_start(field, field, 1.0, grid)), coarse)
    assert torch.equal(grid.coarse(carrier), coarse_noise(field, grid))                 # coarse cells = DC(E)
    new = grid.fine_pixels(torch.ones_like(coarse))
    out, sigma = transition.same_t(grid, carrier, new, 1.0, carrier, field, "hadamard")
    assert sigma == 1.0 and torch.allclose(out, field, atol=1e-6)
    assert torch.allclose(haar.haar_synthesis(coarse_noise(field, grid), detail_noise(field, grid), f), field, atol=1e-6)


def test_coarse_start_of_img2img_is_the_coarse_rf_state():
    field, signal = torch.randn(1, 4, 1, 16, 16), torch.randn(1, 4, 1, 16, 16)
    grid, s = CellGrid.of(field.shape, 2), 0.6
    z = coarse_start(s * field + (1 - s) * signal, field, s, grid)
    assert torch.allclose(z, (1 - s) * grid.coarse(signal) + s * coarse_noise(field, grid), atol=1e-6)


@pytest.mark.parametrize("variant", ["same_t", "snr_matched"])
def test_transitions_give_exact_rf_states(variant):
    """Both transition variants turn an exact coarse state at t into exact fine states (A at t, B at t')."""
    gen = torch.Generator().manual_seed(1)
    x0, field = torch.randn(1, 4, 1, 16, 16, generator=gen), torch.randn(1, 4, 1, 16, 16, generator=gen)
    grid, t = CellGrid.of(x0.shape, 2), 0.6
    coarse = grid.all_coarse()
    x0c = grid.spread(grid.coarse(x0))
    carrier = grid.spread((1 - t) * grid.coarse(x0) + t * coarse_noise(field, grid))
    new = grid.fine_pixels(torch.ones_like(coarse))
    if variant == "same_t":
        out, s = transition.same_t(grid, carrier, new, t, x0c, field, "hadamard")
    else:
        out, s = transition.snr_matched(grid, carrier, new, grid.fine_pixels(coarse), t, field, "hadamard", "unified")
        assert s == pytest.approx(2 * t / (1 + t))
    assert torch.allclose(out, (1 - s) * x0c + s * field, atol=1e-5)


def test_snr_matched_moves_every_other_token_along_its_own_path():
    gen = torch.Generator().manual_seed(2)
    x0, field = torch.randn(1, 4, 1, 16, 16, generator=gen), torch.randn(1, 4, 1, 16, 16, generator=gen)
    grid, t = CellGrid.of(x0.shape, 2), 0.5
    up = torch.zeros(1, *grid.cell_shape, dtype=torch.bool)
    up[0, 0, :2] = True                                        # half the cells are already fine
    x0_carrier = grid.merge(x0, grid.spread(grid.coarse(x0)), up)
    noise_carrier = grid.merge(field, grid.spread(coarse_noise(field, grid)), up)
    carrier = (1 - t) * x0_carrier + t * noise_carrier
    new_up = up.clone()
    new_up[0, 0, 2, 0] = True
    new = grid.fine_pixels(new_up) & ~grid.fine_pixels(up)
    out, s = transition.snr_matched(grid, carrier, new, grid.fine_pixels(up), t, field, "hadamard", "unified")
    kept = ~grid.fine_pixels(new_up).expand_as(out)
    want = (1 - s) * x0_carrier + s * noise_carrier
    assert torch.allclose(out[kept], want[kept], atol=1e-5)                        # coarse cells at t'
    old = grid.fine_pixels(up).expand_as(out)
    assert torch.allclose(out[old], want[old], atol=1e-5)                          # fine cells at t'


def test_interpolate_expansion_differs_only_in_the_signal():
    gen = torch.Generator().manual_seed(3)
    x0, field = torch.randn(1, 4, 1, 16, 16, generator=gen), torch.randn(1, 4, 1, 16, 16, generator=gen)
    grid, t = CellGrid.of(x0.shape, 2), 0.4
    up_all = torch.ones(1, *grid.cell_shape, dtype=torch.bool)
    new = grid.fine_pixels(up_all)
    x0c = grid.spread(grid.coarse(x0))
    a, _ = transition.same_t(grid, x0c, new, t, x0c, field, "hadamard")
    b, _ = transition.same_t(grid, x0c, new, t, x0c, field, "interpolate")
    assert torch.allclose(a - t * field, (1 - t) * x0c, atol=1e-5)                 # nearest (Haar) signal
    assert not torch.allclose(a, b, atol=1e-3)
    bilinear = torch.nn.functional.interpolate(grid.coarse(x0)[:, :, 0], scale_factor=2, mode="bilinear")
    assert torch.allclose(b[:, :, 0] - t * field[:, :, 0], (1 - t) * bilinear, atol=1e-5)


def test_fresh_noise_is_deterministic_per_seed_and_change():
    f = NoiseField(torch.zeros(1, 4, 1, 8, 8), seed=5)
    assert torch.equal(f.fresh(0), NoiseField(torch.zeros(1, 4, 1, 8, 8), seed=5).fresh(0))
    assert not torch.equal(f.fresh(0), f.fresh(1))
    assert not torch.equal(f.fresh(0), NoiseField(torch.zeros(1, 4, 1, 8, 8), seed=6).fresh(0))


# -- layout ----------------------------------------------------------------------------------------
def _random_up(grid, batch, share, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = round(share * grid.cells)
    up = torch.zeros(batch, grid.cells, dtype=torch.bool)
    for b in range(batch):
        up[b, torch.randperm(grid.cells, generator=gen)[:n]] = True
    return up.view(batch, *grid.cell_shape)


@pytest.mark.parametrize("shape,f", [((2, 4, 1, 16, 16), 2), ((1, 4, 1, 13, 18), 2), ((2, 4, 3, 20, 12), 2),
                                     ((1, 4, 1, 19, 17), 4)])
def test_rows_partition_the_latent_and_gather_scatter_is_identity(shape, f):
    grid = CellGrid.of(shape, f)
    up = _random_up(grid, shape[0], 0.4)
    rows = grid.rows(up)
    assert rows.shape[1] == grid.tokens(int(up[0].sum()))
    ones = scatter_tokens_torch(torch.ones(shape[0], rows.shape[1], 4 * shape[1]), rows, shape, f)
    assert torch.equal(ones, torch.ones(shape))                                      # every pixel exactly once
    x = torch.randn(shape)
    carrier = grid.merge(x, grid.spread(grid.coarse(x)), up)
    tokens = gather_tokens_torch(carrier, rows, f)
    assert torch.allclose(scatter_tokens_torch(tokens, rows, shape, f), carrier, atol=1e-6)


def test_all_fine_rows_are_the_model_patchify_order():
    grid = CellGrid.of((1, 4, 1, 9, 12), 2)
    rows = grid.rows(torch.ones(1, *grid.cell_shape, dtype=torch.bool))
    t, r, c, scale = row_coordinates(rows, 2, "fine")
    assert scale == 1.0 and torch.equal(r[0], torch.arange(5).repeat_interleave(6).float())
    assert torch.equal(c[0], torch.arange(6).repeat(5).float())


def test_coarse_unit_positions_follow_ralu():
    grid = CellGrid.of((1, 4, 1, 8, 8), 2)
    up = torch.zeros(1, *grid.cell_shape, dtype=torch.bool)
    up[0, 0, 0, 1] = True                                                  # the top-right cell is fine
    rows = grid.rows(up)
    t, r, c, scale = row_coordinates(rows, 2, "coarse")
    fine_pos = sorted(zip((r[0, :4] * scale).tolist(), (c[0, :4] * scale).tolist()))
    assert fine_pos == [(0.0, 1.0), (0.0, 1.5), (0.5, 1.0), (0.5, 1.5)]      # children at i + a/2
    assert sorted(zip((r[0, 4:] * scale).tolist(), (c[0, 4:] * scale).tolist())) == [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]
    t, r, c, scale = row_coordinates(rows, 2, "coarse_centred")
    assert (r[0, 4] * scale, c[0, 4] * scale) == (0.25, 0.25)
    t, r, c, scale = row_coordinates(rows, 2, "fine")
    assert (r[0, 4], c[0, 4]) == (0.5, 0.5) and scale == 1.0


def test_edge_strip_is_always_fine():
    grid = CellGrid.of((1, 4, 1, 10, 9), 2)     # 2 x 2 whole cells, a strip of 2 rows / 1 column
    assert grid.cell_shape == (1, 2, 2) and grid.covered == (8, 8)
    mask = grid.fine_pixels(grid.all_coarse())
    assert mask[..., 8:, :].all() and mask[..., :, 8:].all() and not mask[..., :8, :8].any()


# -- selection and stages --------------------------------------------------------------------------
def test_variance_selection_upsamples_the_most_converged_cells():
    grid = CellGrid.of((1, 4, 1, 16, 16), 2)
    base = torch.randn(1, 4, 1, 8, 8)
    history = [base.clone() for _ in range(3)]
    moving = torch.zeros(1, 1, 1, 4, 4, dtype=torch.bool)
    moving[..., :2, :] = True                                           # top half keeps changing
    for k, h in enumerate(history):
        h += k * 0.5 * haar.nearest_up(moving.float(), 2)
    score = selection.variance_score(history)
    up = selection.select(torch.zeros(1, *grid.cell_shape, dtype=torch.bool), score, torch.tensor([8]))
    assert up[0, 0, 2:].all() and not up[0, 0, :2].any()
    channel = selection.variance_score(history, "channel")
    assert channel.shape == score.shape


def test_fill_isolated_and_equal_counts_per_sample():
    up = torch.ones(2, 1, 3, 3, dtype=torch.bool)
    up[0, 0, 1, 1] = False                                              # a coarse hole inside fine cells
    up[1] = False
    filled = selection.fill_isolated(up)
    assert filled[0].all() and not filled[1].any()
    single = torch.zeros(1, 1, 1, 1, dtype=torch.bool)
    assert not selection.fill_isolated(single).any()                    # a lone cell has no neighbours
    score = torch.arange(18.).view(2, 1, 3, 3)
    out = selection.select(torch.zeros(2, 1, 3, 3, dtype=torch.bool), score, torch.tensor([2, 2]))
    counts = out.flatten(1).sum(1)
    assert counts[0] == counts[1] >= 2


def test_edge_score_ranks_strong_gradients_first():
    x0 = torch.zeros(1, 4, 1, 8, 8)
    x0[..., :, 4:] = 5.0                                                # a vertical edge between cell columns 1 and 2
    score = selection.edge_score(x0)
    assert score[0, 0, :, 1:3].max() < score[0, 0, :, [0, 3]].min()


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_splits_are_exact_at_their_step_count(name):
    p = PRESETS[name]
    plan = StagePlan.for_steps(p.nfe, preset_options(name))
    assert (plan.coarse, plan.progressive, plan.full) == p.split


def test_stage_plan_scales_and_keeps_a_full_resolution_end():
    opts = preset_options("balanced")
    for steps in range(1, 40):
        plan = StagePlan.for_steps(steps, opts)
        assert plan.steps == steps and plan.full >= 1
        assert plan.progressive == 0 or plan.coarse >= 1
        shares = [plan.fine_share(i) for i in range(steps)]
        assert shares == sorted(shares) and shares[-1] == 1.0
    plan = StagePlan.for_steps(18, opts)
    assert [plan.stage(i) for i in (0, 4, 5, 10, 11, 17)] == [1, 1, 2, 2, 3, 3]
    assert plan.fine_share(5) == pytest.approx(0.3) and plan.fine_share(6) == pytest.approx(0.4)


def test_options_are_validated_with_their_choices():
    with pytest.raises(ValueError, match="variance, random, edge"):
        FrescoOptions(selection="attention").validated()
    with pytest.raises(ValueError, match="2, 4"):
        FrescoOptions(factor=3).validated()
    with pytest.raises(ValueError, match="positive full-resolution"):
        FrescoOptions(split=(5, 6, 0)).validated()
    with pytest.raises(ValueError, match="quality, balanced, fast, custom"):
        preset_options("turbo")
    assert parse_split("9/10/11") == (9.0, 10.0, 11.0)
    with pytest.raises(ValueError, match="5/6/7"):
        parse_split("5-6")
