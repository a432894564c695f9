"""Feature caches keyed by the token set of the call.

A token-set sampler (Fresco) publishes the set of computed tokens under
transformer_options[LAYOUT_KEY] with a `key` that changes whenever the set does, even at the same
token count. The cache keys its entries by that key (plus window) and drops a cond's entries of the
old set as soon as a new one appears: no dead caches, no forecast across a change of token set."""
import logging
import re

import pytest
import torch

import comfy.patcher_extension
import comfy.sample
import comfy.samplers
from fastdit.caching import HICACHE_KEY, apply_hicache
from fastdit.dynres.forward import LAYOUT_KEY
from fastdit.dynres.fresco import fresco_sampler
from fastdit.dynres.stages import preset_options
from fastdit.testing import tiny_models as tm
from fastdit.testing.tracing import attention_traced

STEPS = 18
SETTINGS = dict(interval=3, warmup_steps=1, order=1)


class _Peak:
    """Records the largest cache the run held (bytes) through a DIFFUSION_MODEL wrapper."""

    def __init__(self):
        self.bytes = 0

    def wrap(self, model):
        def spy(executor, *args, **kwargs):
            out = executor(*args, **kwargs)
            run = args[-1].get(HICACHE_KEY + "_run")
            self.bytes = max(self.bytes, run.store.nbytes)
            return out
        m = model.clone()
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_peak", spy)
        return m


def _latent():
    latent = torch.zeros(tm.latent_shape("flux", 24, 24))
    return latent, comfy.sample.prepare_noise(latent, 11), tm.conditioning("flux", 2), tm.conditioning("flux", 3)


def _cache_mib(caplog):
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("HiCache (")]
    return float(re.search(r"cache ([\d.]+) MiB", lines[-1]).group(1))


def test_key_lookup_reads_the_published_token_set():
    from fastdit.caching.comfy_hooks import resolution_key, token_set_key
    class Tokens:
        key = "abc"
    assert token_set_key({}) is None and token_set_key({LAYOUT_KEY: Tokens()}) == "abc"
    assert resolution_key({LAYOUT_KEY: Tokens()}) == (("tokens", "abc"), None)
    x = torch.zeros(2, 16, 8, 8)
    assert resolution_key({}, x, [torch.zeros(2, 5, 32)]) == (("shapes", ((16, 8, 8), (5, 32))), None)


def test_fresco_stack_holds_no_more_cache_than_plain_hicache(caplog):
    caplog.set_level(logging.INFO)
    base = tm.make_model("flux")
    latent, noise, pos, neg = _latent()
    plain_peak, fresco_peak = _Peak(), _Peak()
    plain = plain_peak.wrap(apply_hicache(base, **SETTINGS))
    comfy.sample.sample(plain, noise, STEPS, 1.0, "euler", "simple", pos, neg, latent, disable_pbar=True)
    plain_mib = _cache_mib(caplog)
    model = fresco_peak.wrap(apply_hicache(base, **SETTINGS))
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", STEPS).cpu()
    comfy.sample.sample_custom(model, noise, 1.0, fresco_sampler(preset_options("balanced")), sigmas, pos, neg,
                               latent, disable_pbar=True, seed=11)
    fresco_mib = _cache_mib(caplog)
    assert plain_peak.bytes > 0 and fresco_peak.bytes > 0
    assert fresco_peak.bytes <= plain_peak.bytes, (fresco_peak.bytes, plain_peak.bytes)
    assert fresco_mib <= plain_mib


class _ChangingTokens:
    """A token set whose key changes at a given step while the token count stays the same."""

    def __init__(self):
        self.key = "set-a"


def test_new_token_set_at_equal_token_count_starts_the_cache_afresh(caplog):
    caplog.set_level(logging.INFO)
    base = tm.make_model("flux")
    latent, noise, pos, neg = _latent()

    def traced(model, tokens):
        return attention_traced(model, {LAYOUT_KEY: tokens} if tokens is not None else None)

    settings = dict(interval=4, warmup_steps=1, order=1)
    model, steady = traced(apply_hicache(base, **settings), _ChangingTokens())
    comfy.sample.sample(model, noise, 12, 1.0, "euler", "simple", pos, neg, latent, disable_pbar=True)
    blocks = max(steady)
    forecast_steps = [i for i, a in enumerate(steady) if a == 0]
    assert forecast_steps, steady
    change = forecast_steps[1]                    # a step the plan forecasts, with a cache behind it

    tokens = _ChangingTokens()

    def callback(step, *args):
        if step + 1 == change:
            tokens.key = "set-b"                  # same tokens count, other tokens

    model, calls = traced(apply_hicache(base, **settings), tokens)
    comfy.sample.sample(model, noise, 12, 1.0, "euler", "simple", pos, neg, latent, disable_pbar=True,
                        callback=callback)
    assert calls[:change] == steady[:change]
    assert calls[change] == blocks, (change, calls)     # no forecast across the change: computed in full
    later = [i for i in forecast_steps if i > change + 1]
    assert later and all(calls[i] == 0 for i in later)  # the new set's cache forecasts again
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("HiCache (")][-1]
    assert "the plan had" in line


def test_old_token_set_entries_are_dropped():
    from fastdit.caching.store import SlotStore
    store = SlotStore()
    a, b = (("tokens", "a"), None), (("tokens", "b"), None)
    store.use("c", a)
    store.entry("c", ("double_block", 0), a + (((16, 8),),))["img"] = torch.zeros(1)
    store.use("u", a)
    store.entry("u", ("double_block", 0), a + (((16, 8),),))["img"] = torch.zeros(1)
    store.use("c", b)                                    # cond "c" moves to another token set
    assert store.peek("c", ("double_block", 0), a + (((16, 8),),)) is None
    assert store.peek("u", ("double_block", 0), a + (((16, 8),),)) is not None
    shapes = (("shapes", ((16, 8),)), None)              # shape-keyed entries are never evicted this way
    store.entry("c", ("double_block", 0), shapes)["img"] = torch.zeros(1)
    store.use("c", (("tokens", "z"), None))
    assert store.peek("c", ("double_block", 0), shapes) is not None


@pytest.mark.parametrize("window", [None, (0, 1, 2)])
def test_window_is_part_of_the_key(window):
    from fastdit.caching.comfy_hooks import resolution_key
    class Window:
        index_list = list(window or [])

    class Tokens:
        key = "k"
    opts = {LAYOUT_KEY: Tokens()}
    if window is not None:
        opts["context_window"] = Window()
    assert resolution_key(opts)[1] == window
