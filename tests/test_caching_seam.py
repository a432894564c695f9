"""The seam between the caching machinery and a technique: forecaster objects, the observer of full
computes, compute-only runs, and data shared by clones instead of copied."""
import dataclasses

import torch

import comfy.sample
from fastdit.caching import TaylorCacheConfig
from fastdit.caching.comfy_hooks import install
from fastdit.caching.interface import Shared
from fastdit.testing import tiny_models as tm

SLOTS = 2 * 4 + 2 * 1  # tiny FLUX: 2 double blocks x 4 module slots + 2 single blocks x 1


def _sample(model, steps=12, cfg=2.0):
    pos, neg = tm.conditioning("flux", 0), tm.conditioning("flux", 1)
    latent = torch.zeros(tm.latent_shape("flux", 16, 16))
    noise = comfy.sample.prepare_noise(latent, 0)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", pos, neg, latent, disable_pbar=True)


class Recorder(Shared):
    def __init__(self):
        self.calls = []

    def __call__(self, slot, block_key, cond, feature, evaluation):
        self.calls.append((slot, block_key, cond, tuple(feature.shape), None if evaluation is None else evaluation.mode,
                           None if evaluation is None else evaluation.step))


@dataclasses.dataclass(frozen=True)
class Observed(TaylorCacheConfig):
    observer: object = None
    compute_only: bool = False


def test_observer_sees_every_full_compute_per_slot_and_cond():
    rec = Recorder()
    out = _sample(install(tm.make_model("flux"), Observed(interval=4, warmup_steps=2, observer=rec), "test_seam"))
    assert torch.isfinite(out).all()
    # 12 steps, warm-up 2, N=4: full at steps 0, 1, 5, 9; 10 slots; cond and uncond batched
    assert len(rec.calls) == 4 * SLOTS * 2
    assert {c[5] for c in rec.calls} == {0, 1, 5, 9} and {c[4] for c in rec.calls} == {"full"}
    assert len({c[2] for c in rec.calls}) == 2 and {c[3][0] for c in rec.calls} == {1}   # one row per cond
    assert {c[0] for c in rec.calls} == {"img_attn", "img_mlp", "txt_attn", "txt_mlp", "total"}


def test_compute_only_run_equals_the_model_and_observes_every_step():
    model = tm.make_model("flux")
    base = _sample(model)
    rec = Recorder()
    out = _sample(install(model, Observed(interval=4, warmup_steps=2, observer=rec, compute_only=True), "test_seam"))
    assert torch.equal(out, base)
    assert len(rec.calls) == 12 * SLOTS * 2
    planned = sorted({(c[5], c[4]) for c in rec.calls})
    assert [s for s, mode in planned if mode == "full"] == [0, 1, 5, 9]
    assert len(planned) == 12


class Zeros:
    """A forecaster whose state is not a History: forecasts every module output as zero in fp32."""

    def __init__(self):
        self.closed = False

    def update(self, state, feature, position, slot, cache_device=None, owned=False):
        assert isinstance(slot, tuple) and isinstance(slot[0], tuple) and isinstance(slot[1], str)
        return {"shape": tuple(feature.shape), "position": position}

    def predict(self, state, position, out):
        assert out.dtype == torch.float32
        return out.zero_()

    def output_spec(self, state):
        return state["shape"], torch.float32

    def close(self):
        self.closed = True


@dataclasses.dataclass(frozen=True)
class ZeroConfig(TaylorCacheConfig):
    forecasters: object = None

    def make_forecaster(self):
        f = Zeros()
        self.forecasters.append(f)
        return f


class Bag(list, Shared):
    pass


def test_a_forecaster_with_its_own_state_plugs_in_and_is_closed_after_the_run():
    model = tm.make_model("flux")
    made = Bag()
    out = _sample(install(model, ZeroConfig(interval=4, warmup_steps=2, forecasters=made), "test_seam"))
    base = _sample(model)
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    assert len(made) == 1 and made[0].closed


def test_shared_data_is_the_same_object_in_every_clone():
    rec = Recorder()
    patched = install(tm.make_model("flux"), Observed(observer=rec), "test_seam")
    clone = patched.clone().clone()
    assert clone.model_options["transformer_options"]["test_seam"].observer is rec
