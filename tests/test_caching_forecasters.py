"""Update and forecast rules of HiCache and the TaylorSeer family (HiCache, arXiv 2508.16984)."""
import math

import pytest
import torch

from fastdit.caching import TaylorCacheConfig, forecasters as fc
from fastdit.caching.store import SlotStore, chunk_rows
from kernels.forecast import forecast_reference


def test_hermite_polynomials():
    for x in (-1.3, 0.0, 0.4, 2.5):
        assert fc.hermite(0, x) == 1.0
        assert fc.hermite(1, x) == pytest.approx(2 * x)
        assert fc.hermite(2, x) == pytest.approx(4 * x * x - 2)
        assert fc.hermite(3, x) == pytest.approx(8 * x ** 3 - 12 * x)


@pytest.mark.parametrize("k", [1, 2.5, 6])
def test_coefficients_match_the_spec(k):
    # HiCache's coefficients at sigma=0.5 -> order 1 = 0.5k, order 2 = 0.125k^2 - 0.25 (note the -sigma^2 offset)
    c1, c2 = fc.coefficients("hicache", 2, 0.5, k)
    assert c1 == pytest.approx(0.5 * k) and c2 == pytest.approx(0.125 * k * k - 0.25)
    assert fc.coefficients("taylorseer", 3, 0.5, k) == pytest.approx([k, k * k / 2, k ** 3 / 6])
    assert fc.coefficients("hi-taylor", 2, 0.5, k) == pytest.approx([k * 0.25, k * k / 2 * 0.0625])
    assert fc.coefficients("reuse", 2, 0.5, k) == []
    # sigma = 1/sqrt(2) reproduces the Taylor first-order term exactly
    assert fc.coefficients("hicache", 1, 1 / math.sqrt(2), k)[0] == pytest.approx(k)
    with pytest.raises(ValueError, match="hicache, hi-taylor, taylorseer, reuse"):
        fc.coefficients("magic", 1, 0.5, k)


def _feature(s):
    return torch.full((1, 3, 2), 1.0 + 0.5 * s + 0.1 * s * s)


def test_update_warmup_gating_and_differences():
    # first_enhance = 3, N = 7: full steps 0, 1, 2, 9 (HiCache's code: {D0, D1} after step 2, D2 at step 9)
    h = None
    orders = []
    for s in (0, 1, 2, 9):
        h = fc.update(h, _feature(s), float(s), max_order=2, warmup_steps=3)
        orders.append(len(h.terms))
    assert orders == [1, 1, 2, 3]
    d1_2 = (_feature(2) - _feature(1)) / 1
    d1_9 = (_feature(9) - _feature(2)) / 7
    assert torch.allclose(h.terms[0], _feature(9))
    assert torch.allclose(h.terms[1], d1_9)
    assert torch.allclose(h.terms[2], (d1_9 - d1_2) / 7)
    assert h.position == 9.0


def test_stored_feature_is_a_copy_unless_owned():
    f = torch.ones(2, 2)
    h = fc.update(None, f, 0.0, 2, 0)
    f += 1  # FLUX blocks add in place into the tensors they are given
    assert torch.equal(h.terms[0], torch.ones(2, 2))
    g = torch.ones(2, 2)
    assert fc.update(None, g, 0.0, 2, 0, owned=True).terms[0] is g


def test_same_position_refreshes_d0_and_keeps_differences():
    h = fc.update(fc.update(None, _feature(0), 0.0, 1, 0), _feature(1), 1.0, 1, 0)
    again = fc.update(h, _feature(5), 1.0, 1, 0)
    assert torch.equal(again.terms[0], _feature(5)) and torch.equal(again.terms[1], h.terms[1])


def test_shape_change_starts_a_fresh_history():
    h = fc.update(fc.update(None, _feature(0), 0.0, 1, 0), _feature(1), 1.0, 1, 0)
    h2 = fc.update(h, torch.zeros(1, 5, 2), 2.0, 1, 0)
    assert len(h2.terms) == 1 and h2.terms[0].shape == (1, 5, 2)


def test_linear_features_are_forecast_exactly_by_taylor_and_matched_hermite():
    lin = lambda s: torch.full((4,), 2.0 - 0.3 * s)  # noqa: E731
    h = None
    for s in (0, 1, 2, 6):
        h = fc.update(h, lin(s), float(s), 1, 3)
    for mode, sigma in (("taylorseer", 0.5), ("hicache", 1 / math.sqrt(2))):
        pred = fc.predict(h, mode, 1, sigma, 9.5, forecast_reference)
        assert torch.allclose(pred, lin(9.5), atol=1e-6), mode
    # the paper's sigma = 0.5 damps the extrapolation (c1 = 0.5k): it lands between reuse and Taylor
    damped = fc.predict(h, "hicache", 1, 0.5, 9.5, forecast_reference)
    assert torch.allclose(damped, lin(6) + 0.5 * (lin(9.5) - lin(6)))
    assert torch.equal(fc.predict(h, "reuse", 1, 0.5, 9.5, forecast_reference), lin(6))


def test_forecast_at_the_cached_position_is_the_cached_value():
    h = None
    for s in (0, 1, 2):
        h = fc.update(h, _feature(s), float(s), 2, 0)
    assert torch.equal(fc.predict(h, "hicache", 2, 0.5, 2.0, forecast_reference), _feature(2))


def test_predict_writes_into_out_and_moves_offloaded_terms():
    h = None
    for s in (0, 1, 2):
        h = fc.update(h, _feature(s), float(s), 2, 0, cache_device="cpu")
    out = torch.empty(2, 3, 2)
    fc.predict(h, "hicache", 2, 0.5, 4.0, forecast_reference, out=out[1:])
    c1, c2 = fc.coefficients("hicache", 2, 0.5, 2.0)
    want = h.terms[0] + c1 * h.terms[1] + c2 * h.terms[2]
    assert torch.allclose(out[1:], want)


def test_config_validation_names_the_choices():
    with pytest.raises(ValueError, match="module, block"):
        TaylorCacheConfig(granularity="layer")
    with pytest.raises(ValueError, match="hicache, hi-taylor, taylorseer, reuse"):
        TaylorCacheConfig(mode="fora")
    with pytest.raises(ValueError, match="start_percent <= end_percent"):
        TaylorCacheConfig(start_percent=0.8, end_percent=0.2)
    with pytest.raises(ValueError, match="interval must be >= 1"):
        TaylorCacheConfig(interval=0)
    assert TaylorCacheConfig(mode="reuse", order=2).max_order == 0


def test_chunks_and_store_keys():
    assert chunk_rows(6, ["c", "u"]) == [("c", slice(0, 3)), ("u", slice(3, 6))]
    assert chunk_rows(5, ["c", "u"]) == [(("c", "u"), slice(0, 5))]
    store = SlotStore()
    store.entry("c", ("double_block", 0), ((4, 8),))["img"] = fc.History([torch.zeros(2, 4, 8)], 0.0)
    store.entry("u", ("double_block", 0), ((4, 8),))["img"] = fc.History([torch.zeros(2, 4, 8)], 0.0)
    store.entry("c", ("double_block", 0), ((9, 8),))  # another resolution: its own entry
    assert store.n_slots == 2 and store.n_conds == 2 and store.nbytes == 2 * 2 * 4 * 8 * 4
    store.drop(["c"])
    assert store.n_conds == 1 and store.peek("c", ("double_block", 0), ((4, 8),)) is None


def test_fp32_forecast_into_out_is_bitwise_the_accumulated_one():
    """fp32 features are accumulated straight into `out`: the same adds as the copy-and-accumulate path."""
    g = torch.Generator().manual_seed(3)
    terms = [torch.randn(2, 37, 24, generator=g) * 10 ** i for i in range(3)]
    coeffs = [0.37, -0.123]
    acc = terms[0].clone()
    for c, t in zip(coeffs, terms[1:]):
        acc.add_(t, alpha=c)
    out = torch.empty_like(terms[0])
    assert forecast_reference(terms, coeffs, out=out) is out and torch.equal(out, acc)
    half = [t.bfloat16() for t in terms]
    ref = half[0].float()
    for c, t in zip(coeffs, half[1:]):
        ref.add_(t.float(), alpha=c)
    assert torch.equal(forecast_reference(half, coeffs, out=torch.empty_like(half[0])), ref.bfloat16())


def test_half_precision_forecast_without_triton_adds_in_the_feature_dtype():
    """Without Triton, bf16 / fp16 terms are combined in their own dtype, one rounded add per term,
    straight into `out` (a row of a batch here); that is within a rounding per term of the fp32
    reference and differs from it somewhere. fp32 terms keep the reference's arithmetic."""
    from kernels import backend
    from kernels.forecast import forecast
    g = torch.Generator().manual_seed(5)
    coeffs = [0.75, -0.3]
    for dtype in (torch.bfloat16, torch.float16):
        terms = [torch.randn(3, 300, 24, generator=g).to(dtype) for _ in range(3)]
        assert backend(terms[0]) == "torch"
        want = torch.add(terms[0], terms[1], alpha=coeffs[0]).add_(terms[2], alpha=coeffs[1])
        batch = torch.full((2, 3, 300, 24), 5.0, dtype=dtype)
        res = forecast(terms, coeffs, out=batch[1])
        assert res.data_ptr() == batch[1].data_ptr() and torch.equal(batch[1], want) and (batch[0] == 5).all()
        assert torch.equal(forecast(terms, coeffs), want)
        ref = forecast_reference(terms, coeffs)
        magnitude = sum(abs(c) * t.double().abs() for c, t in zip([1.0] + coeffs, terms))
        assert ((want.double() - ref.double()).abs() <= 2 * torch.finfo(dtype).eps * magnitude).all()
        assert not torch.equal(want, ref)
        fp32_out = torch.empty(terms[0].shape)
        assert torch.equal(forecast(terms, coeffs, out=fp32_out), want.float())  # other dtype: copied in
    fp32 = [t.float() for t in terms]
    assert torch.equal(forecast(fp32, coeffs), forecast_reference(fp32, coeffs))
