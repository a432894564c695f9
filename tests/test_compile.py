"""The feature caches under ComfyUI's torch.compile (TorchCompileModel's logic, backend aot_eager).

ComfyUI compiles the diffusion model, so the caches' DIFFUSION_MODEL wrapper and block replacements
run inside the compiled region. A run must cost a fixed number of compilations (one graph per kind
of call: full, full and store, forecast) whatever its step count, and a second run none."""
import pytest
import torch

import comfy.sample
from fastdit.caching import apply_hicache, apply_svdcache
from fastdit.testing import tiny_models as tm
from fastdit.testing.compile_probe import CompileProbe, compile_available

STEPS = 8

pytestmark = pytest.mark.skipif(compile_available() is not None, reason=str(compile_available()))


@pytest.fixture
def probe():
    p = CompileProbe()
    p.reset()
    yield p
    p.reset()


def _sample(model):
    pos, neg = tm.conditioning("flux", 0), tm.conditioning("flux", 1)
    latent = torch.zeros(tm.latent_shape("flux", 16, 16))
    noise = comfy.sample.prepare_noise(latent, 0)
    return comfy.sample.sample(model, noise, STEPS, 2.0, "euler", "simple", pos, neg, latent, disable_pbar=True)


def _check_two_runs(probe, cached, max_first):
    eager = _sample(cached)
    compiled = probe.compiled(cached)
    outs = []
    for _ in range(2):
        with probe.run():
            outs.append(_sample(compiled))
    first, second = probe.runs
    assert first.graphs >= 1, "nothing was compiled: the torch.compile wrapper did not run"
    assert first.frames <= max_first, first
    assert (second.graphs, second.frames, second.recompiles) == (0, 0, 0), second
    for out in outs:
        torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)
    return first


@pytest.mark.slow
def test_hicache_every_step_full_compiles_once(probe):
    first = _check_two_runs(probe, apply_hicache(tm.make_model("flux"), interval=1), max_first=1)
    assert first.recompiles == 0


def test_hicache_default_schedule_compiles_a_fixed_number_of_times(probe):
    # interval 7, warm-up 3 over 8 steps: full-and-store steps, then forecasts
    _check_two_runs(probe, apply_hicache(tm.make_model("flux")), max_first=3)


@pytest.mark.slow
def test_svdcache_compiles_a_fixed_number_of_times(probe):
    model = apply_svdcache(tm.make_model("flux"), subspace="full", interval=3, warmup_steps=2)
    _check_two_runs(probe, model, max_first=3)


@pytest.mark.slow
def test_uncached_model_compiles_once(probe):
    """The probe itself: ComfyUI's wrapper compiles the plain model once and reuses it."""
    first = _check_two_runs(probe, tm.make_model("flux"), max_first=1)
    assert first.graphs == 1
