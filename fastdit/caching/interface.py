"""What a feature-cache technique hands the shared machinery (comfy_hooks, run, store).

A technique is an immutable *config* object installed with `comfy_hooks.install(model, config, key)`:

    interval, warmup_steps, start_percent, end_percent    the full/forecast schedule (schedule.py)
    granularity ("module" | "block"), cache_device ("compute" | "cpu"), technique (name in messages)
    describe() -> str                                     settings for the run's log line
    make_forecaster() -> Forecaster                       a fresh forecaster for one sampling run
    observer: Observer | None   (optional)                called for every full compute
    compute_only: bool          (optional, default False) never forecast: every block runs in full,
                                                          the plan only tells the observer which
                                                          steps the cache would compute in full

The config lives in `model_options["transformer_options"][key]`, which ComfyUI copies on every
`ModelPatcher.clone()` (a deep copy on 0.3.75, shared objects on newer releases). Large or mutable
data a config refers to (an SVD basis, a calibration accumulator) must therefore be held by a
`Shared` object, which copies to itself: the config stays small and every clone sees the same data.
"""
from typing import Optional, Protocol, Sequence, Tuple

import torch

SlotKey = Tuple[tuple, str]  # (block patch key, slot name), e.g. (("double_block", 0), "img_attn")


class Forecaster(Protocol):
    """Update and forecast rule of one sampling run. A slot's state is whatever `update` returns
    (it should have `nbytes`); the machinery stores it per (cond, block, resolution, slot)."""

    def update(self, state: object, feature: torch.Tensor, position: float, slot: SlotKey,
               cache_device: Optional[str] = None, owned: bool = False) -> object:
        """The new state after a full compute gave `feature` ([rows, tokens, channels]) at
        `position` (a float step index). `owned`: the tensor is fresh and may be kept without a copy."""

    def predict(self, state: object, position: float, out: torch.Tensor) -> torch.Tensor:
        """Write the forecast at `position` into `out` (shape and dtype from `output_spec`)."""

    def output_spec(self, state: object) -> Tuple[Tuple[int, ...], torch.dtype]:
        """(shape, dtype) of the feature `predict` writes for this state (its row count is the cond's)."""

    def close(self) -> None:
        """Drop per-run resources (device copies of bases, ...); called when the run ends."""

    # Optional: told the run's resolved schedule before its first evaluation (a speed preset's
    # interval is known only then), e.g. to pick the forecast rule for that interval.
    def use_schedule(self, config: object, interval: int, warmup_steps: int) -> None:
        """Called by the run state whenever it builds a plan from the sampler's schedule."""

    # Optional (needed to forecast inside torch.compile's region; without them a compiled model
    # computes every block in full):
    def coefficients(self, state: object, position: float) -> Sequence[float]:
        """c such that predict(state, position) == terms[0] + sum_i c[i] * terms[i + 1], of one
        fixed length per run (zero where the state has fewer terms). Called outside compiled code."""

    def predict_with(self, state: object, coeffs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`predict` with the coefficients as an fp32 tensor (traced: no per-step Python numbers)."""


class Observer(Protocol):
    def __call__(self, slot: str, block_key: tuple, cond: object, feature: torch.Tensor, evaluation: object) -> None:
        """One full compute of `slot` in block `block_key` for cond uuid `cond`: `feature` is the
        slot's pre-gate output for that cond's rows (do not keep or modify it in place);
        `evaluation` is the schedule.Evaluation of the call (its `mode` is what the plan says the
        cache does at this step), or None when the sampler gave no schedule."""


class Shared:
    """Base of objects a config may refer to without being copied by ModelPatcher.clone()."""

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self
