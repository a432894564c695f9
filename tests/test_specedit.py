"""SpecEdit draft -> verify on the tiny FLUX Kontext and Qwen-Image-Edit models and on demo-kontext:
locking (every locked pixel is the source), the boundary ring, selection, the global fallback and
the errors users see."""
import inspect
import logging

import pytest
import torch

from fastdit.adapters import UnsupportedInputError, UnsupportedModelError
from fastdit.dynres.layout import CellGrid, as5d
from fastdit.specedit import discrepancy
from fastdit.specedit.options import DraftOptions, VerifyOptions
from fastdit.specedit.sampler import image_to_cells, run_draft, run_verify
from fastdit.testing import tiny_models

EDIT_FAMILIES = ["flux_kontext", "qwen_image_edit"]


def _inputs(family, size=24, seed=0):
    return tiny_models.graph_inputs(family, seed, size, size)


def _painted(size_px, rows, cols):
    """A MASK [1, size, size] painting image pixels rows x cols."""
    m = torch.zeros(1, size_px, size_px)
    m[:, rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    return m


def test_nodes_are_registered(pack_nodes):
    for node_id, display in (("FastDiTSpecEditDraft", "SpecEdit draft (low-res edit preview)"),
                             ("FastDiTSpecEditVerify", "SpecEdit verify (refine edited tokens)")):
        schema = pack_nodes[node_id].define_schema()
        assert schema.display_name == display and schema.category == "FastDiT/dynamic-resolution"


@pytest.mark.parametrize("resolution", ["full", "coarse"])
@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_nodes_lock_every_pixel_outside_the_refined_cells(pack_nodes, family, resolution):
    """24x24 latent, factor 2: 6x6 cells of 4x4 latent pixels. A painted mask selects cells
    (1..2, 1..2); dilation 1 unlocks the 4x4 block (0..3, 0..3). Latent level, as the verify node
    returns it: every pixel of a locked cell equals the source latent, bit for bit; the 7 ring
    cells (row or column 3) are 0.8 source + 0.2 edit (ring = all); the 9 others are generated."""
    model, pos, neg, latent, vae = _inputs(family)
    draft, preview, disc = pack_nodes["FastDiTSpecEditDraft"].execute(
        model, pos, neg, latent, vae, 3, 8, 2.0, "simple", 0.5, "2", "latent", resolution).args
    assert preview.shape == (1, 48, 48, 3) and disc.shape == (1, 48, 48)
    mask = _painted(48, (8, 24), (8, 24))
    verify = pack_nodes["FastDiTSpecEditVerify"].execute
    out, refined = verify(model, draft, 0.5, 0.0, 0, 1, 0.8, "fine", mask, "all").args
    x, src = as5d(out["samples"]), as5d(pos[0][1]["reference_latents"][0])
    assert x.shape == src.shape
    cells = refined[0, ::8, ::8]                                          # 8 image px per cell
    expect = torch.zeros(6, 6)
    expect[:4, :4] = 1
    assert torch.equal(cells, expect)
    px = torch.zeros(24, 24, dtype=torch.bool)
    px[:16, :16] = True
    inner = torch.zeros(24, 24, dtype=torch.bool)
    inner[:12, :12] = True                   # cells (0..2, 0..2): no locked neighbour (the image edge is none)
    ring = px & ~inner
    diff = (x - src).abs()[0, :, 0]
    assert float(diff[:, ~px].max()) == 0.0                              # locked: exactly the source
    assert float(diff[:, inner].mean()) > 0.05                           # refined: generated
    # the ring is the blend of source and edit: rerun verify without blending to get the edit there
    out0, _ = verify(model, draft, 0.5, 0.0, 0, 1, 0.0, "fine", mask, "all").args
    x0 = as5d(out0["samples"])
    assert torch.allclose(x[..., ring], (0.8 * src + 0.2 * x0)[..., ring], atol=1e-5)
    assert torch.equal(x[..., inner], x0[..., inner])                   # verify does not change the draft


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_global_edit_falls_back_to_full_resolution(family, caplog):
    model, pos, neg, latent, vae = _inputs(family, 16)
    draft, _, _ = run_draft(model, pos, neg, latent, vae, 0, 6, 1.0, DraftOptions(measure="latent"))
    with caplog.at_level(logging.INFO, logger="FastDiT"):
        out, refined, summary = run_verify(model, draft, VerifyOptions(threshold=0.0))
    assert summary["global"] and summary["refined_share"] == 1.0 and float(refined.min()) == 1.0
    assert any("global edit" in r.getMessage() and "full resolution" in r.getMessage() for r in caplog.records)


def test_selection_threshold_budget_coverage_dilation():
    score = torch.zeros(1, 1, 8, 8)
    score[0, 0, 3, 3] = 0.9
    score[0, 0, 5, 6] = 0.2
    e, a, g = discrepancy.unlock(score, VerifyOptions(threshold=0.5, coverage_stride=0, dilation=1))
    assert not g and int(e.sum()) == 1 and int(a.sum()) == 9 and bool(a[0, 0, 2:5, 2:5].all())
    e, a, _ = discrepancy.unlock(score, VerifyOptions(threshold=0.1, coverage_stride=0, dilation=0))
    assert int(e.sum()) == 2 and torch.equal(a, e)
    e, _, _ = discrepancy.unlock(score, VerifyOptions(threshold=5.0, budget=2 / 64, coverage_stride=0, dilation=0))
    assert int(e.sum()) == 2
    _, a, _ = discrepancy.unlock(torch.zeros(1, 1, 8, 8), VerifyOptions(threshold=0.5, coverage_stride=4, dilation=0))
    assert a[0, 0].nonzero().tolist() == [[2, 2], [2, 6], [6, 2], [6, 6]]
    _, a, g = discrepancy.unlock(torch.ones(1, 1, 8, 8), VerifyOptions(threshold=0.5))
    assert g and bool(a.all())
    ring = discrepancy.boundary_ring(discrepancy.dilate(score > 0.5, 1))
    assert int(ring.sum()) == 8 and not bool(ring[0, 0, 3, 3])


def test_batch_samples_keep_their_own_cells():
    score = torch.zeros(2, 1, 6, 6)
    score[0, 0, 0, 0] = 1.0
    score[1, 0, 2:4, 2:4] = 1.0
    score[1, 0, 5, 5] = 0.4
    _, a, _ = discrepancy.unlock(score, VerifyOptions(threshold=0.5, coverage_stride=0, dilation=0))
    assert a.flatten(1).sum(1).tolist() == [1, 4]


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_a_batch_row_equals_its_single_run(family):
    """Two edits of one source in a batch, refining different numbers of cells (mask override):
    the first row equals the same edit run alone (same seed: the batch's first noise row)."""
    from fastdit.testing import tiny_models as tm
    model, pos, neg, latent, vae = _inputs(family)
    small, large = _painted(48, (8, 16), (8, 16)), _painted(48, (0, 40), (0, 24))
    options = (VerifyOptions(threshold=0.5, coverage_stride=0, dilation=1, blend=0.8))
    outs = []
    for batch, mask in ((1, small), (2, torch.cat([small, large]))):
        lat = {"samples": torch.zeros(tm.latent_shape(family, 24, 24, 1, batch))}
        draft, _, _ = run_draft(model, pos, neg, lat, vae, 3, 8, 2.0, DraftOptions(0.5, 2, "latent"))
        out, refined, _ = run_verify(model, draft, options, mask)
        outs.append((out["samples"], refined))
    (single, refined_single), (batched, refined_batch) = outs
    assert refined_batch[0].sum() < refined_batch[1].sum()               # the rows refine different cells
    assert torch.equal(refined_batch[:1], refined_single)
    assert float((batched[:1] - single).abs().max()) < 1e-3


def test_mask_override_maps_to_cells_and_checks_its_shape():
    grid = CellGrid.of((1, 16, 24, 24), 2)
    cells = image_to_cells(_painted(96, (0, 40), (0, 40)), grid, batch=1)   # any size of the aspect ratio
    assert cells.shape == (1, 1, 6, 6) and cells[0, 0, :3, :3].sum() == 9 and cells.sum() == 9
    with pytest.raises(UnsupportedInputError, match="aspect ratio"):
        image_to_cells(torch.zeros(1, 48, 96), grid, batch=1)


# -- errors ---------------------------------------------------------------------------------------
def test_conditioning_without_reference_is_refused():
    model, pos, neg, latent, vae = tiny_models.graph_inputs("flux", 0, 16, 16)
    with pytest.raises(UnsupportedInputError, match="reference latent in the positive conditioning.*ReferenceLatent"):
        run_draft(model, pos, neg, latent, vae, 0, 6, 1.0, DraftOptions())


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_latent_of_another_size_than_the_reference_is_refused(family):
    model, pos, neg, _, vae = _inputs(family, 16)
    latent = {"samples": torch.zeros(tiny_models.latent_shape(family, 16, 24))}
    with pytest.raises(UnsupportedInputError, match="latent must have the reference's size: the latent is 24x16"):
        run_draft(model, pos, neg, latent, vae, 0, 6, 1.0, DraftOptions())


def test_draft_from_another_model_is_refused():
    model, pos, neg, latent, vae = _inputs("flux_kontext", 16)
    draft, _, _ = run_draft(model, pos, neg, latent, vae, 0, 6, 1.0, DraftOptions())
    other = tiny_models.make_model("flux_kontext", seed=1)
    with pytest.raises(UnsupportedInputError, match="another model than its draft"):
        run_verify(other, draft, VerifyOptions())
    with pytest.raises(UnsupportedInputError, match="needs the draft output"):
        run_verify(model, {"samples": latent["samples"]}, VerifyOptions())
    run_verify(model.clone(), draft, VerifyOptions())                    # a patched clone is the same model


def test_other_model_families_are_refused_naming_the_supported_ones():
    model, pos, neg, latent, vae = tiny_models.graph_inputs("wan", 0, 16, 16)
    with pytest.raises(UnsupportedModelError, match="FLUX.1 Kontext and Qwen-Image-Edit"):
        run_draft(model, pos, neg, latent, vae, 0, 6, 1.0, DraftOptions())


def test_bad_options_name_what_is_supported():
    with pytest.raises(ValueError, match="latent, vae"):
        DraftOptions(measure="lpips").validated()
    with pytest.raises(ValueError, match="2, 4"):
        DraftOptions(factor=3).validated()
    with pytest.raises(ValueError, match="at least 2 steps"):
        DraftOptions().draft_steps(1)
    with pytest.raises(ValueError, match="budget must be between 0 and 1"):
        VerifyOptions(budget=1.5).validated()


def _qwen_has_timestep_zero():
    from comfy.ldm.qwen_image.model import QwenImageTransformerBlock
    return "timestep_zero_index" in inspect.signature(QwenImageTransformerBlock.forward).parameters


@pytest.mark.skipif(not _qwen_has_timestep_zero(), reason="this ComfyUI's Qwen-Image has no index_timestep_zero")
def test_qwen_index_timestep_zero_reference_method_runs_the_pair():
    model, pos, neg, latent, vae = _inputs("qwen_image_edit", 24)
    for cond in (pos, neg):
        cond[0][1]["reference_latents_method"] = "index_timestep_zero"
    draft, _, _ = run_draft(model, pos, neg, latent, vae, 0, 6, 2.0, DraftOptions())
    out, _, summary = run_verify(model, draft, VerifyOptions(), mask=_painted(48, (8, 24), (8, 24)))
    src = as5d(pos[0][1]["reference_latents"][0])
    x = as5d(out["samples"])
    assert torch.isfinite(x).all() and not summary["global"]
    assert float((x - src).abs()[..., 16:, 16:].max()) == 0.0


# -- demo-kontext: a real edit ------------------------------------------------------------------
def test_demo_kontext_edit_refines_the_object_and_keeps_the_rest():
    """One recolour on demo-kontext (32x32 latent, 10 steps, CFG 3): the draft's own discrepancy
    ("vae": decoded pixels for the demo's linear VAE) refines every cell the edit touches, the edit
    is right, and the decoded image equals the source exactly outside the refined cells."""
    import torch.nn.functional as F

    from demo import bench_models
    bm = bench_models.load("demo-kontext")
    job = next(j for j in bm.jobs(4, [0], 32, 32) if "make the" in j.label)
    draft, _, disc = run_draft(bm.model, job.positive, job.negative, {"samples": job.latent}, bm.vae, job.seed, 10,
                               3.0, DraftOptions())
    out, refined, summary = run_verify(bm.model, draft, VerifyOptions())
    img = bm.decode(out["samples"]).float()
    touched = F.adaptive_max_pool2d(1 - job.unedited_mask.float()[:, None], (8, 8))[:, 0] > 0
    assert bool(refined[:, ::8, ::8][touched].min() == 1.0)
    assert summary["refined_share"] < 0.6 and not summary["global"]
    assert job.score(img)["scene_accuracy"] == 1.0
    locked = refined[0] == 0
    assert float((img[0] - job.source[0]).abs()[locked].max()) < 1e-5


def test_vae_measure_reads_a_convolutional_decoders_first_layers():
    """A FLUX/SD-style decoder (comfy's Decoder: conv_in, mid block): the "vae" measure uses its
    first two feature maps and scores the changed cell highest."""
    from types import SimpleNamespace

    from comfy.ldm.modules.diffusionmodules.model import Decoder
    torch.manual_seed(0)
    dec = Decoder(ch=32, out_ch=3, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(), in_channels=3,
                  resolution=32, z_channels=16)
    tiny_models.init_weights(dec, 0)                                        # comfy's ops leave weights empty
    vae = SimpleNamespace(first_stage_model=SimpleNamespace(decoder=dec))
    grid = CellGrid.of((1, 16, 16, 16), 2)
    source = torch.randn(1, 16, 16, 16)
    x0 = source.clone()
    x0[..., 4:8, 8:12] += 2.0                                               # cell (1, 2) changed
    with torch.no_grad():
        score, view = discrepancy.vae_score(vae, x0, source, grid)
    assert view == "decoder features" and score.shape == (1, 1, 4, 4)
    assert int(score.flatten().argmax()) == 1 * 4 + 2 and float(score[0, 0, 0, 0]) < 0.5 * float(score[0, 0, 1, 2])


# -- draft resolution and ring blending ---------------------------------------------------------
def test_new_inputs_come_last_and_are_optional(pack_nodes):
    """Saved workflows keep their widget values: the draft's `resolution` and verify's `ring` are
    the last inputs, optional, after the inputs of earlier versions."""
    draft = pack_nodes["FastDiTSpecEditDraft"].define_schema().inputs
    verify = pack_nodes["FastDiTSpecEditVerify"].define_schema().inputs
    assert [i.id for i in draft][-4:] == ["draft_fraction", "coarse_factor", "discrepancy", "resolution"]
    assert [i.id for i in verify][-3:] == ["positions", "mask", "ring"]
    assert draft[-1].optional and draft[-1].default == "auto" and draft[-1].options == ["auto", "coarse", "full"]
    assert verify[-1].optional and verify[-1].default == "unchanged" and verify[-1].options == ["all", "unchanged"]


def test_a_full_resolution_draft_is_plain_eulers_start():
    """resolution = full: the draft's state after its steps is plain Euler's (ComfyUI's sampler, same
    sigmas and noise), so the edit starts on the full edit's own path."""
    import comfy.k_diffusion.sampling
    import comfy.sample
    import comfy.samplers
    model, pos, neg, latent, vae = _inputs("flux_kontext", 16)
    draft, _, _ = run_draft(model, pos, neg, latent, vae, 5, 10, 2.0, DraftOptions(0.3, 2, "latent", "full"))
    assert draft.draft_steps == 3
    noise = comfy.sample.prepare_noise(latent["samples"], 5)
    states = []

    def euler(*args, **kwargs):                   # ComfyUI's Euler; its state before the output scaling
        states.append(comfy.k_diffusion.sampling.sample_euler(*args, **kwargs))
        return states[-1]
    comfy.sample.sample_custom(model, noise, 2.0, comfy.samplers.KSAMPLER(euler), draft.sigmas[:4], pos, neg,
                               latent["samples"], seed=5)
    euler = states[0]
    assert float((draft.carrier - euler).abs().max()) < 1e-4 * float(euler.abs().max())
    coarse, _, _ = run_draft(model, pos, neg, latent, vae, 5, 10, 2.0, DraftOptions(0.3, 2, "latent", "coarse"))
    assert float((coarse.carrier - euler).abs().max()) > 0.1 * float(euler.abs().max())


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_ring_unchanged_blends_only_the_ring_cells_the_edit_left_alone(family):
    """ring = unchanged: a ring cell with a latent pixel the edit moved by at least the threshold
    (locking.changed_cells) keeps the edit; the other ring cells are blended as with ring = all;
    locked pixels are the source bit for bit. The threshold is set between the ring cells' changes
    so that both kinds occur."""
    from fastdit.specedit.locking import changed_cells
    model, pos, neg, latent, vae = _inputs(family)
    draft, _, _ = run_draft(model, pos, neg, latent, vae, 3, 8, 2.0, DraftOptions(0.5, 2, "latent"))
    mask = _painted(48, (8, 24), (8, 24))
    plain = VerifyOptions(threshold=0.5, coverage_stride=0, dilation=1, blend=0.0)
    edit, refined, _ = run_verify(model, draft, plain, mask)
    grid, base = draft.grid, model.model
    x, src = as5d(edit["samples"]), as5d(pos[0][1]["reference_latents"][0])
    unlocked = refined[:, ::8, ::8].bool()[:, None]
    ring = discrepancy.boundary_ring(unlocked)
    d = (as5d(base.process_latent_in(edit["samples"])) - as5d(base.process_latent_in(src))).pow(2).mean(1) / 4
    peak = d.reshape(1, 1, 6, 4, 6, 4).amax((3, 5))
    tau = float(peak[ring].median())
    out, _, summary = run_verify(model, draft, VerifyOptions(tau, 0.0, 0, 1, 0.8, ring="unchanged"),
                                 mask * (tau + 1))                       # the same cells at this threshold
    y = as5d(out["samples"])
    kept = changed_cells(grid, as5d(base.process_latent_in(edit["samples"])), as5d(base.process_latent_in(src)), tau)
    assert torch.equal(kept, peak >= tau) and 0 < int((kept & ring).sum()) < int(ring.sum())
    assert summary["ring_unblended"] == int((kept & ring).sum())
    px = lambda cells: grid.fine_pixels(cells)[0, 0]                     # noqa: E731
    assert torch.equal(y[..., px(kept & ring)], x[..., px(kept & ring)])
    blended = ring & ~kept
    assert torch.allclose(y[..., px(blended)], (0.8 * src + 0.2 * x)[..., px(blended)], atol=1e-5)
    assert float((y - src).abs()[..., ~px(unlocked)].max()) == 0.0


def test_demo_kontext_removal_keeps_the_removed_objects_edge_out_of_the_ring():
    """demo-kontext "remove the red diamond" (edit 5 of the bench, 32x32 latent, the coarse preset:
    14 steps, 6 of them a coarse draft, threshold 0.03): with
    ring = all the blended ring puts 80 % of the removed object's edge back; ring = unchanged keeps
    the edit there, so the pixels the edit must change are much closer to the exact edited render."""
    from demo import bench_models, world
    from fastdit import metrics
    bm = bench_models.load("demo-kontext")
    job = bm.jobs(5, [0], 32, 32)[4]
    src_scene, edit = bench_models.edit_cases(5)[4]
    assert "remove" in job.label
    target = world.render(edit.apply(src_scene), 64, 64)
    draft, _, _ = run_draft(bm.model, job.positive, job.negative, {"samples": job.latent}, bm.vae, job.seed, 14,
                            3.0, DraftOptions(0.4, 2, "vae", "coarse"))
    changed = 1 - job.unedited_mask.float()
    db = {}
    for ring in ("all", "unchanged"):
        out, _, _ = run_verify(bm.model, draft, VerifyOptions(threshold=0.03, ring=ring))
        db[ring] = float(metrics.psnr(bm.decode(out["samples"]).float(), target, mask=changed)[0])
    assert db["unchanged"] > db["all"] + 3.0, db


def test_auto_resolution_drafts_coarse_only_on_a_grid_of_16_cells_per_side(caplog):
    """resolution = auto: full below 16 coarse cells along the shorter side (the demo's 32x32 latent has
    8), coarse from 16 (a 64x64 latent at factor 2; factor 4 needs 128); the draft runs the chosen
    one: at 16x16 its state is the full draft's, bit for bit."""
    import logging
    auto = DraftOptions(0.3, 2, "latent", "auto")
    assert auto.for_latent((1, 16, 32, 32)).resolution == "full"
    assert auto.for_latent((1, 16, 64, 64)).resolution == "coarse"
    assert auto.for_latent((1, 16, 64, 60)).resolution == "full"
    assert DraftOptions(0.3, 4, "latent", "auto").for_latent((1, 16, 64, 64)).resolution == "full"
    assert DraftOptions(0.3, 4, "latent", "auto").for_latent((1, 16, 3, 128, 128)).resolution == "coarse"
    assert DraftOptions(0.3, 2, "latent", "coarse").for_latent((1, 16, 32, 32)).resolution == "coarse"
    caplog.set_level(logging.INFO)
    model, pos, neg, latent, vae = _inputs("flux_kontext", 16)
    drafted, _, _ = run_draft(model, pos, neg, latent, vae, 5, 10, 2.0, auto)
    full, _, _ = run_draft(model, pos, neg, latent, vae, 5, 10, 2.0, DraftOptions(0.3, 2, "latent", "full"))
    assert drafted.options.resolution == "full" and torch.equal(drafted.carrier, full.carrier)
    assert any("resolution auto -> full" in r.getMessage() for r in caplog.records)
