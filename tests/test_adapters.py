"""Adapters detect families, name the supported ones otherwise, and match the models' own layout."""
import pytest
import torch

from fastdit import adapters
from fastdit.testing import tiny_models as tm


def test_detects_flux_and_qwen():
    assert adapters.for_model(tm.make_model("flux")).family == "flux"
    assert adapters.for_model(tm.make_model("qwen_image")).family == "qwen_image"


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
    _, gh, gw = ad.token_grid(x.shape)
    assert img.shape[1] == gh * gw
    assert torch.equal(ad.grid_positions(gh, gw), ids[0])


@pytest.mark.parametrize("h,w", [(16, 16), (12, 20), (10, 14)])
def test_qwen_positions_are_centred_like_process_img(h, w):
    ad = adapters.for_model(tm.make_model("qwen_image"))
    x = torch.zeros(1, 16, 1, h, w)
    img, ids, _ = ad.model.process_img(x)
    _, gh, gw = ad.token_grid(x.shape)
    assert torch.equal(ad.grid_positions(gh, gw), ids[0])
    # a subset keeps full-grid positions
    sub = ad.positions(torch.tensor([0, gh - 1]), torch.tensor([1, 2]), (gh, gw))
    assert torch.equal(sub, ids[0][[1, (gh - 1) * gw + 2]])


def _attention_lengths(family, ref):
    """Run one model call, capturing (q_len) of the first attention call and the text length."""
    model = tm.make_model(family)
    seen = []

    def spy(func, *args, **kwargs):
        seen.append(args[0].shape)
        return func(*args, **kwargs)

    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = spy
    latent = torch.zeros(tm.latent_shape(family, 12, 16))
    cond = tm.conditioning(family, reference=ref)
    import comfy.sample
    comfy.sample.sample(model, torch.randn_like(latent), 1, 1.0, "euler", "simple", cond, cond, latent, disable_pbar=True)
    return seen[0], latent.shape


@pytest.mark.parametrize("family", ["flux_kontext", "qwen_image_edit"])
def test_token_layout_matches_real_sequence(family):
    ref = tm.reference_latent(family, 8, 10)
    q_shape, shape = _attention_lengths(family, ref)
    ad = adapters.for_model(tm.make_model(family))
    layout = ad.token_layout(shape, [ref.shape], n_text=tm.TEXT_TOKENS)
    assert layout.n_target == 6 * 8 and layout.n_reference == (4 * 5,)
    assert q_shape[2] == layout.n_total  # [B, heads, L, D] with skip_reshape
    assert layout.target == slice(tm.TEXT_TOKENS, tm.TEXT_TOKENS + 48)
    assert layout.reference == slice(tm.TEXT_TOKENS + 48, layout.n_total)
