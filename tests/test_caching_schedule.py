"""Full/forecast schedule of the TaylorSeer family (TaylorSeer's FLUX code) and step positions from sigmas."""
import pytest
import torch

from fastdit.caching.schedule import FORECAST, FULL, StepPlan, step_position, taylorseer_plan


def _full_steps(T, warmup, N):
    return [s for s, m in enumerate(taylorseer_plan([True] * T, N, warmup)) if m == FULL]


@pytest.mark.parametrize("warmup,counts", [(3, {5: 12, 6: 10, 7: 9, 8: 8}),
                                           (1, {5: 10, 6: 9, 7: 8, 8: 7}),
                                           (2, {5: 11, 6: 10, 7: 8, 8: 8})])
def test_full_step_counts_match_the_published_speedups(warmup, counts):
    # T=50; e.g. FLUX first_enhance=3, N=7 -> 9 full steps -> 5.56x (HiCache paper: 5.55x)
    for n, full in counts.items():
        assert len(_full_steps(50, warmup, n)) == full


def test_flux_headline_schedule():
    assert _full_steps(50, 3, 7) == [0, 1, 2, 9, 16, 23, 30, 37, 44]
    plan = StepPlan(torch.linspace(1, 0, 51), interval=7, warmup_steps=3)
    assert plan.full_steps == 9 and plan.speedup == pytest.approx(50 / 9)
    assert plan.modes[-1] == FORECAST  # no forced full compute on the last step


def test_interval_one_never_forecasts():
    assert FORECAST not in taylorseer_plan([True] * 30, 1, 0)


def test_window_outside_is_full_and_restarts_the_counter():
    allowed = [False] * 10 + [True] * 10
    plan = taylorseer_plan(allowed, 4, 2)
    assert plan[:10] == [FULL] * 10
    assert plan[10:] == [FORECAST, FORECAST, FORECAST, FULL] * 2 + [FORECAST, FORECAST]


def test_percent_window_uses_sigmas():
    sig = torch.linspace(1, 0, 21)  # step s at sigma 1 - s/20
    plan = StepPlan(sig, interval=100, warmup_steps=0, start_sigma=0.75, end_sigma=0.25)
    forecast_steps = [s for s, m in enumerate(plan.modes) if m == FORECAST]
    # sigma 0.75 .. 0.30 may forecast (from the cache of the full steps before the window); 0.25 is the end
    assert forecast_steps == list(range(5, 15))


def test_positions_of_schedule_sigmas_midpoints_and_outside():
    sig = [1.0, 0.8, 0.5, 0.2, 0.0]
    assert [step_position(s, sig) for s in sig[:-1]] == [0.0, 1.0, 2.0, 3.0]
    assert step_position(0.8 * (1 + 5e-5), sig) == 1.0     # tolerance of context_windows (rtol 1e-4)
    assert step_position(0.65, sig) == pytest.approx(1.5)   # DPM-2 style midpoint
    assert step_position(1.3, sig) == 0.0                   # above the schedule (churn) clamps
    assert step_position(torch.tensor([0.5, 0.5])[0], torch.tensor(sig)) == 2.0


def test_heun_evaluations_follow_the_step_of_their_sigma():
    # Heun evaluates at sigma_i and (corrector) sigma_{i+1}: decisions follow the schedule position,
    # so the corrector of step 2 shares step 3's decision -- never a per-call count.
    sig = torch.linspace(1, 0, 11)
    plan = StepPlan(sig, interval=3, warmup_steps=2)
    heun = [float(sig[0])] + [float(s) for i in range(1, 10) for s in (sig[i], sig[i])]
    evs = [plan.evaluation(s) for s in heun]
    assert [e.step for e in evs] == [0] + [i for i in range(1, 10) for _ in (0, 1)]
    assert all(e.mode == plan.modes[e.step] for e in evs)
    assert plan.evaluation(float(sig[0])) == evs[0]


def test_forecasts_after():
    plan = StepPlan(torch.linspace(1, 0, 21), interval=5, warmup_steps=3)
    last_full = max(s for s, m in enumerate(plan.modes) if m == FULL)
    assert plan.forecasts_after(0) and plan.forecasts_after(last_full)
    assert not plan.forecasts_after(19)
    assert not StepPlan(torch.linspace(1, 0, 21), interval=1, warmup_steps=0).forecasts_after(0)


def test_real_flux_schedule_positions():
    import comfy.samplers
    from fastdit.testing import tiny_models as tm
    ms = tm.make_model("flux").get_model_object("model_sampling")
    sig = comfy.samplers.calculate_sigmas(ms, "simple", 50)
    plan = StepPlan(sig, interval=7, warmup_steps=3)
    assert [plan.evaluation(s).step for s in sig[:-1]] == list(range(50))
    assert plan.full_steps == 9
