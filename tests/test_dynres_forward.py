"""The mixed-resolution forward of each family against the model's own forward: with every cell
fine it IS the normal forward; with every cell coarse it IS the model on the downsampled latent."""
import pytest
import torch

from fastdit import adapters
from fastdit.adapters import call_arguments
from fastdit.dynres.forward import mixed_adapter, mixed_forward
from fastdit.dynres.layout import CellGrid, MixedLayout, as5d
from fastdit.testing import tiny_models as tm

FAMILIES = {"flux": (2, 16, 14, 18), "qwen_image": (1, 16, 1, 14, 19), "hunyuan_video": (2, 16, 3, 12, 16)}


def _inputs(family, shape, seed=0, reference=None):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    context = torch.randn(shape[0], 8, 64, generator=gen)
    kwargs = {"transformer_options": {}}
    if family in ("flux", "flux_kontext", "hunyuan_video"):
        kwargs.update(y=torch.randn(shape[0], 32, generator=gen), guidance=torch.full((shape[0],), 3.5))
    if reference is not None:
        kwargs["ref_latents"] = [reference]
    return x, torch.full((shape[0],), 0.7), context, kwargs


def _mixed(dm, adapter, x, t, context, kwargs, up, positions, factor=2):
    layout = MixedLayout(adapter, CellGrid.of(x.shape, factor), up, positions)
    return mixed_forward(dm, call_arguments(dm, (x, t, context), dict(kwargs, transformer_options={})), layout)


def _setup(family):
    model = tm.make_model(family)
    return model.model.diffusion_model, mixed_adapter(model)


@pytest.mark.parametrize("family,text_mask", [("flux", False), ("qwen_image", False), ("qwen_image", True),
                                              ("hunyuan_video", False), ("hunyuan_video", True)])
def test_all_fine_mixed_forward_is_the_normal_forward(family, text_mask):
    """(FLUX's attention_mask spans the whole sequence and is refused in mixed steps, tested below.)"""
    dm, ad = _setup(family)
    shape = (1, *FAMILIES[family][1:]) if text_mask else FAMILIES[family]   # ComfyUI masks batch 1 here
    x, t, context, kwargs = _inputs(family, shape)
    if text_mask:                                     # HunyuanVideo / Qwen-Image: a mask over the text tokens
        kwargs["attention_mask"] = torch.tensor([[1] * 6 + [0] * 2])
    grid = CellGrid.of(x.shape, 2)
    up = torch.ones((x.shape[0], *grid.cell_shape), dtype=torch.bool)
    with torch.no_grad():
        want = dm(x, t, context, **kwargs)
        got = _mixed(dm, ad, x, t, context, kwargs, up, "fine")
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), float((got - want).abs().max())


@pytest.mark.parametrize("family,ref_hw", [("flux_kontext", (16, 16)), ("flux_kontext", (10, 12)),
                                           ("qwen_image_edit", (16, 16)), ("qwen_image_edit", (12, 20))])
def test_all_fine_mixed_forward_with_reference_latents(family, ref_hw):
    dm, ad = _setup(family)
    shape = tm.latent_shape(family, 16, 16)
    x, t, context, kwargs = _inputs(family, shape, reference=tm.reference_latent(family, *ref_hw))
    grid = CellGrid.of(shape, 2)
    with torch.no_grad():
        want = dm(x, t, context, **kwargs)
        got = _mixed(dm, ad, x, t, context, kwargs, torch.ones((1, *grid.cell_shape), dtype=torch.bool), "fine")
    assert torch.equal(got, want)


@pytest.mark.parametrize("family", ["flux", "flux_kontext", "qwen_image", "hunyuan_video"])
def test_all_coarse_mixed_forward_is_the_model_on_the_downsampled_latent(family):
    """Coarse units (RALU): the coarse stage is exactly the model at low resolution, velocity
    nearest-upsampled; a same-size Kontext reference is downsampled with the target."""
    dm, ad = _setup(family)
    shape = tm.latent_shape(family, 16, 16, frames=2 if family == "hunyuan_video" else 1)
    ref = tm.reference_latent(family, 16, 16) if family == "flux_kontext" else None
    x, t, context, kwargs = _inputs(family, shape, reference=ref)
    grid = CellGrid.of(shape, 2)
    carrier = grid.spread(grid.coarse(as5d(x))).view(shape)
    low = grid.coarse(as5d(x)).view(*shape[:-2], 8, 8)
    low_kwargs = dict(kwargs)
    if ref is not None:
        low_kwargs["ref_latents"] = [grid.coarse(as5d(ref)).view(*ref.shape[:-2], 8, 8)]
    with torch.no_grad():
        want = grid.spread(as5d(dm(low, t, context, **low_kwargs)))
        got = _mixed(dm, ad, carrier, t, context, kwargs, grid.all_coarse(), "coarse")
    assert torch.allclose(as5d(got), want, atol=1e-5), float((as5d(got) - want).abs().max())


def test_mixed_forward_runs_block_patches_on_the_mixed_sequence():
    """Block replacements (patches_replace["dit"]) see the mixed token count."""
    dm, ad = _setup("flux")
    x, t, context, kwargs = _inputs("flux", (1, 16, 16, 16))
    seen = []

    def spy(args, extra):
        seen.append(args["img"].shape[1])
        return extra["original_block"](args)

    grid = CellGrid.of(x.shape, 2)
    up = grid.all_coarse().clone()
    up[0, 0, 0, :2] = True
    layout = MixedLayout(ad, grid, up, "coarse")
    options = {"patches_replace": {"dit": {("double_block", 0): spy}}}
    with torch.no_grad():
        mixed_forward(dm, call_arguments(dm, (x, t, context), dict(kwargs, transformer_options=options)), layout)
    assert seen == [layout.rows.shape[1]] and layout.rows.shape[1] == 2 * 4 + 14


@pytest.mark.parametrize("family", ["wan", "sd15"])
def test_other_families_are_refused_with_the_supported_ones_named(family):
    with pytest.raises(adapters.UnsupportedModelError) as e:
        mixed_adapter(tm.make_model(family))
    for name in ("FLUX.1", "Qwen-Image", "HunyuanVideo"):
        assert name in str(e.value)


def test_inputs_a_mixed_set_cannot_carry_are_refused():
    dm, ad = _setup("flux")
    x, t, context, kwargs = _inputs("flux", (1, 16, 16, 16))
    grid = CellGrid.of(x.shape, 2)
    for extra, reason in (({"control": {"input": [], "output": []}}, "ControlNet"),
                          ({"attention_mask": torch.ones(1, 8)}, "attention mask")):
        call = call_arguments(dm, (x, t, context), dict(kwargs, **extra))
        with pytest.raises(adapters.UnsupportedInputError, match=reason):
            mixed_forward(dm, call, MixedLayout(ad, grid, grid.all_coarse(), "coarse"))
    hy_dm, hy_ad = _setup("hunyuan_video")
    hx, ht, hc, hk = _inputs("hunyuan_video", (1, 16, 1, 16, 16))
    call = call_arguments(hy_dm, (hx, ht, hc), dict(hk, guiding_frame_index=torch.zeros(1)))
    with pytest.raises(adapters.UnsupportedInputError, match="guiding frame"):
        mixed_forward(hy_dm, call, MixedLayout(hy_ad, CellGrid.of(hx.shape, 2), CellGrid.of(hx.shape, 2).all_coarse()))


@pytest.mark.parametrize("family,method", [("flux_kontext", "offset"), ("flux_kontext", "index"),
                                           ("flux_kontext", "uxo"), ("qwen_image_edit", "index"),
                                           ("qwen_image_edit", "offset")])
def test_reference_placements_match_the_model_for_every_method(family, method):
    dm, ad = _setup(family)
    shape = tm.latent_shape(family, 12, 16)
    x, t, context, kwargs = _inputs(family, shape)
    kwargs["ref_latents"] = [tm.reference_latent(family, 10, 14, seed=1), tm.reference_latent(family, 16, 8, seed=2)]
    kwargs["ref_latents_method"] = method
    grid = CellGrid.of(shape, 2)
    with torch.no_grad():
        want = dm(x, t, context, **kwargs)
        got = _mixed(dm, ad, x, t, context, kwargs, torch.ones((1, *grid.cell_shape), dtype=torch.bool), "fine")
    assert torch.equal(got, want)


def test_flux1_refuses_index_timestep_zero_references():
    """FLUX.1 models cannot run the index_timestep_zero method (it needs FLUX.2's global modulation)."""
    dm, ad = _setup("flux_kontext")
    shape = tm.latent_shape("flux_kontext", 16, 16)
    x, t, context, kwargs = _inputs("flux_kontext", shape, reference=tm.reference_latent("flux_kontext", 16, 16))
    kwargs["ref_latents_method"] = "index_timestep_zero"
    with pytest.raises(adapters.UnsupportedInputError, match="'index_timestep_zero' .supported: offset, index, uxo"):
        _mixed(dm, ad, x, t, context, kwargs, CellGrid.of(shape, 2).all_coarse(), "coarse")


def _knows_index_timestep_zero(family, dm):
    """Whether this ComfyUI's model implements the index_timestep_zero reference method (a feature of
    the model code, read from it, not from a version number)."""
    import inspect
    return "timestep_zero_index" in inspect.signature(type(dm.transformer_blocks[0]).forward).parameters


@pytest.mark.parametrize("family", ["qwen_image_edit"])
def test_index_timestep_zero_references_follow_the_model_or_are_refused(family):
    """References modulated at timestep 0 (the default of Qwen-Image-Edit-2511 checkpoints): where the
    model implements the method, the all-fine and all-coarse mixed forwards equal the model's own;
    where it does not, Fresco refuses with a message naming the method."""
    dm, ad = _setup(family)
    shape = tm.latent_shape(family, 16, 16)
    ref = tm.reference_latent(family, 16, 16)
    x, t, context, kwargs = _inputs(family, shape, reference=ref)
    kwargs["ref_latents_method"] = "index_timestep_zero"
    grid = CellGrid.of(shape, 2)
    if not _knows_index_timestep_zero(family, dm):
        with pytest.raises(adapters.UnsupportedInputError, match="index_timestep_zero"):
            _mixed(dm, ad, x, t, context, kwargs, grid.all_coarse(), "coarse")
        return
    with torch.no_grad():
        want = dm(x, t, context, **kwargs)
        got = _mixed(dm, ad, x, t, context, kwargs, torch.ones((1, *grid.cell_shape), dtype=torch.bool), "fine")
        assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
        other = dm(x, t, context, **dict(kwargs, ref_latents_method="index"))
        assert not torch.allclose(other, want, atol=1e-4)   # the method changes the result
        carrier = grid.spread(grid.coarse(as5d(x))).view(shape)
        low = grid.coarse(as5d(x)).view(*shape[:-2], 8, 8)
        low_ref = grid.coarse(as5d(ref)).view(*ref.shape[:-2], 8, 8)
        want_low = grid.spread(as5d(dm(low, t, context, **dict(kwargs, ref_latents=[low_ref]))))
        got_low = _mixed(dm, ad, carrier, t, context, kwargs, grid.all_coarse(), "coarse")
    assert torch.allclose(as5d(got_low), want_low, atol=1e-5), float((as5d(got_low) - want_low).abs().max())
