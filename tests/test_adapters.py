"""Adapters detect families, name the supported ones otherwise, and match the models' own layout."""
import pytest
import torch

import comfy.sample
from fastdit import adapters
from fastdit.testing import tiny_models as tm


@pytest.mark.parametrize("family,expected", [("flux", "flux"), ("flux_kontext", "flux"), ("qwen_image", "qwen_image"),
                                             ("hunyuan_video", "hunyuan_video"), ("wan", "wan")])
def test_detects_each_family(family, expected):
    ad = adapters.for_model(tm.make_model(family))
    assert ad.family == expected
    assert len(ad.blocks()) == 4 if expected in ("flux", "hunyuan_video") else len(ad.blocks()) == 2


def test_unsupported_model_error_names_supported_families():
    with pytest.raises(adapters.UnsupportedModelError) as e:
        adapters.for_model(tm.make_model("sd15"), technique="HiCache")
    msg = str(e.value)
    assert "HiCache" in msg and "UNetModel" in msg
    for a in adapters.ADAPTERS:
        assert a.display_name in msg


@pytest.mark.parametrize("h,w", [(16, 16), (12, 20), (9, 13)])
def test_flux_positions_match_process_img(h, w):
    ad = adapters.for_model(tm.make_model("flux"))
    x = torch.zeros(1, 16, h, w)
    img, ids = ad.model.process_img(x)
    grid = ad.token_grid(x.shape)
    assert img.shape[1] == grid[1] * grid[2]
    assert torch.equal(ad.grid_positions(grid), ids[0])


@pytest.mark.parametrize("h,w", [(16, 16), (12, 20), (10, 14)])
def test_qwen_positions_are_centred_like_process_img(h, w):
    ad = adapters.for_model(tm.make_model("qwen_image"))
    x = torch.zeros(1, 16, 1, h, w)
    img, ids, _ = ad.model.process_img(x)
    grid = ad.token_grid(x.shape)
    assert torch.equal(ad.grid_positions(grid), ids[0])
    gw = grid[2]
    sub = ad.positions(0, torch.tensor([0, grid[1] - 1]), torch.tensor([1, 2]), grid)  # a subset keeps full-grid ids
    assert torch.equal(sub, ids[0][[1, (grid[1] - 1) * gw + 2]])


def test_hunyuan_positions_match_img_ids():
    ad = adapters.for_model(tm.make_model("hunyuan_video"))
    x = torch.zeros(1, 16, 3, 10, 12)
    assert torch.equal(ad.grid_positions(ad.token_grid(x.shape)), ad.model.img_ids(x)[0])


def test_wan_positions_match_rope_encode():
    ad = adapters.for_model(tm.make_model("wan"))
    grid = ad.token_grid((1, 16, 3, 10, 12))
    want = ad.model.rope_encode(3, 10, 12)
    got = ad.model.rope_embedder(ad.grid_positions(grid)[None]).movedim(1, 2)
    assert torch.equal(want, got)


def _first_attention_query(family, latent, cond):
    model = tm.make_model(family)
    seen = []

    def spy(func, *args, **kwargs):
        seen.append(args[0].shape)
        return func(*args, **kwargs)

    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = spy
    comfy.sample.sample(model, torch.randn_like(latent), 1, 1.0, "euler", "simple", cond, cond, latent, disable_pbar=True)
    return seen[0]


@pytest.mark.parametrize("family", ["flux_kontext", "qwen_image_edit"])
def test_token_layout_matches_real_sequence(family):
    ref = tm.reference_latent(family, 8, 10)
    latent = torch.zeros(tm.latent_shape(family, 12, 16))
    q_shape = _first_attention_query(family, latent, tm.conditioning(family, reference=ref))
    layout = adapters.for_model(tm.make_model(family)).token_layout(latent.shape, [ref.shape], n_text=tm.TEXT_TOKENS)
    assert layout.n_target == 6 * 8 and layout.n_reference == (4 * 5,)
    assert q_shape[2] == layout.n_total  # [B, heads, L, D] (skip_reshape)
    assert layout.target == slice(tm.TEXT_TOKENS, tm.TEXT_TOKENS + 48)
    assert layout.reference == slice(tm.TEXT_TOKENS + 48, layout.n_total)


def test_hunyuan_layout_follows_the_models_joint_order():
    """HunyuanVideo's joint sequence was [image, text] in older ComfyUI and is [text, image] since;
    the layout must say what this model does: the single blocks' joint input is checked against the
    text stream the double blocks hand over."""
    model = tm.make_model("hunyuan_video")
    dm = model.model.diffusion_model
    latent = torch.randn(tm.latent_shape("hunyuan_video", 8, 8, frames=2))
    layout = adapters.for_model(model).token_layout(latent.shape, n_text=tm.TEXT_TOKENS)
    seen = {}

    def last_double(args, extra):
        out = extra["original_block"](args)
        seen["txt"] = out["txt"].clone()
        return out

    def first_single(args, extra):
        seen["joint"] = args["img"].clone()
        return extra["original_block"](args)

    opts = {"patches_replace": {"dit": {("double_block", len(dm.double_blocks) - 1): last_double,
                                        ("single_block", 0): first_single}}}
    cond = tm.conditioning("hunyuan_video")[0]
    with torch.no_grad():
        dm(latent, torch.full((1,), 0.5), cond[0], y=cond[1]["pooled_output"], guidance=torch.full((1,), 3.5),
           transformer_options=opts)
    assert layout.n_image == 32 and seen["joint"].shape[1] == layout.n_total
    assert torch.equal(seen["joint"][:, layout.text], seen["txt"])
    assert not torch.equal(seen["joint"][:, layout.image][:, :tm.TEXT_TOKENS], seen["txt"])
