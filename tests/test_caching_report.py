"""The run's log line counts what ran, not what the plan said.

Each model evaluation is counted by what its blocks did (attention calls are the witness: a forecast
block makes none): full, forecast, or mixed; the cost ratio is that of the block calls. Where the
plan and what ran differ (a forecast step with nothing cached for the call's token set or shapes
runs in full), the line says so."""
import logging
import re

import pytest
import torch

import comfy.sample
import comfy.samplers
from fastdit.caching import apply_hicache
from fastdit.dynres.fresco import fresco_sampler
from fastdit.dynres.stages import preset_options
from fastdit.testing import tiny_models as tm
from fastdit.testing.tracing import attention_traced

STEPS = 18
LINE = re.compile(r"(\d+) model evaluations = (\d+) full \+ (\d+) forecast(?: \+ (\d+) mixed)?; "
                  r"cost ratio ([\d.]+)x")
PLAN = re.compile(r"the plan had (\d+) full \+ (\d+) forecast")


def _traced(model):
    """A clone counting attention calls per model call (one per block computed in full)."""
    return attention_traced(model)


def _fresco(model):
    latent = torch.zeros(tm.latent_shape("flux", 24, 24))
    pos, neg = tm.conditioning("flux", 2), tm.conditioning("flux", 3)
    noise = comfy.sample.prepare_noise(latent, 11)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", STEPS).cpu()
    return comfy.sample.sample_custom(model, noise, 1.0, fresco_sampler(preset_options("balanced")), sigmas,
                                      pos, neg, latent, disable_pbar=True, seed=11)


def _plain(model, steps=8):
    latent = torch.zeros(tm.latent_shape("flux", 16, 16))
    pos, neg = tm.conditioning("flux", 0), tm.conditioning("flux", 1)
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), steps, 2.0, "euler", "simple",
                               pos, neg, latent, disable_pbar=True)


def _blocks(model):
    m, calls = _traced(model)
    _plain(m, steps=1)
    return calls[0]


def _logged(caplog):
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("HiCache (")]
    assert len(lines) == 1, lines
    return lines[0]


def _expected(calls, blocks):
    """(full, forecast, mixed, cost ratio) from attention calls (one model call per evaluation)."""
    full = sum(1 for a in calls if a == blocks)
    forecast = sum(1 for a in calls if a == 0)
    done = sum(calls)
    return full, forecast, len(calls) - full - forecast, len(calls) * blocks / done


def _check(line, calls, blocks):
    m = LINE.search(line)
    assert m, line
    n, full, forecast, mixed, ratio = m.groups()
    exp_full, exp_forecast, exp_mixed, exp_ratio = _expected(calls, blocks)
    assert int(n) == len(calls)
    assert (int(full), int(forecast), int(mixed or 0)) == (exp_full, exp_forecast, exp_mixed), (line, calls)
    assert float(ratio) == pytest.approx(exp_ratio, abs=0.006), line


@pytest.mark.parametrize("warmup", [0, 1])
def test_fresco_stack_reports_what_ran(caplog, warmup):
    caplog.set_level(logging.INFO)
    base = tm.make_model("flux")
    blocks = _blocks(base)
    model, calls = _traced(apply_hicache(base, interval=3, warmup_steps=warmup, order=1))
    _fresco(model)
    line = _logged(caplog)
    assert len(calls) == STEPS
    _check(line, calls, blocks)
    plan = PLAN.search(line)
    assert plan, f"the plan's forecasts at new token sets ran in full; the line should say so: {line}"
    assert int(plan.group(1)) + int(plan.group(2)) == STEPS
    assert int(plan.group(1)) < sum(1 for a in calls if a == blocks)


def test_fresco_stack_interval_one_is_all_full(caplog):
    caplog.set_level(logging.INFO)
    base = tm.make_model("flux")
    blocks = _blocks(base)
    model, calls = _traced(apply_hicache(base, interval=1, warmup_steps=0))
    _fresco(model)
    line = _logged(caplog)
    assert calls == [blocks] * STEPS
    _check(line, calls, blocks)
    assert f"{STEPS} model evaluations = {STEPS} full + 0 forecast; cost ratio 1.00x" in line
    assert not PLAN.search(line), line


def test_warmup_zero_first_step_runs_in_full(caplog):
    """With no warm-up the plan forecasts step 0, where nothing is cached yet: it runs in full."""
    caplog.set_level(logging.INFO)
    base = tm.make_model("flux")
    blocks = _blocks(base)
    model, calls = _traced(apply_hicache(base, interval=4, warmup_steps=0))
    _plain(model)
    line = _logged(caplog)
    assert calls[0] == blocks
    _check(line, calls, blocks)
    assert PLAN.search(line).groups() == ("2", "6"), line   # plan: steps 3 and 7 full, step 0 forecast
    assert "8 model evaluations = 3 full + 5 forecast" in line
