"""Fresco under ComfyUI's torch.compile (TorchCompileModel's wrapper, aot_eager backend).

The token-set bookkeeping runs outside the compiled graph, so a run compiles one graph per
structure of the token set (coarse, progressive with dynamic token counts, all fine) and a second
run with new token sets of the same structure recompiles nothing; outputs equal the eager run's."""
import pytest
import torch

import comfy.sample
import comfy.samplers
from fastdit.dynres.fresco import fresco_sampler
from fastdit.dynres.stages import PRESETS, preset_options
from fastdit.testing import tiny_models as tm
from fastdit.testing.compile_probe import CompileProbe, compile_available

pytestmark = pytest.mark.skipif(compile_available() is not None, reason=str(compile_available()))
STEPS = 9


def _run(model, preset):
    latent = torch.zeros(tm.latent_shape("flux", 16, 16))
    pos, neg = tm.conditioning("flux", 2), tm.conditioning("flux", 3)
    noise = comfy.sample.prepare_noise(latent, 7)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", STEPS).cpu()
    return comfy.sample.sample_custom(model, noise, 2.0, fresco_sampler(preset_options(preset)), sigmas, pos, neg,
                                      latent, disable_pbar=True, seed=7)


def _check(preset):
    probe = CompileProbe()
    probe.reset()
    try:
        base = tm.make_model("flux")
        eager = _run(base, preset)
        model = probe.compiled(base)
        with probe.run():
            first = _run(model, preset)
        with probe.run():
            second = _run(model, preset)
        one, two = probe.runs
    finally:
        probe.reset()
    assert 1 <= one.frames <= 3 and one.graphs <= 3, one
    assert (two.graphs, two.frames, two.recompiles) == (0, 0, 0), two
    for out in (first, second):
        assert torch.allclose(out, eager, atol=1e-5, rtol=1e-5), float((out - eager).abs().max())


@pytest.mark.slow   # about a minute and a half on a busy 2-core CPU (three compilations per preset)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_compiles_once_per_token_set_structure(preset):
    _check(preset)
