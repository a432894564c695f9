"""Forecast rules of the TaylorSeer family as small pure functions (HiCache, arXiv 2508.16984).

A slot's history is a list of finite differences [D0, D1, ..., DO] taken at full steps, with the
position (float step index) of the last one. A forecast at distance k (in steps, k > 0) is

    F_hat = D0 + sum_i c_i(k) * D_i

and the modes differ only in the coefficients c_i, which are plain Python floats (fp32-exact):
    hicache     c_i = sigma^i * H_i(sigma*k) / i!     (physicists' Hermite, dual scaling)
    hi-taylor   c_i = k^i / i! * sigma^(2i)
    taylorseer  c_i = k^i / i!
    reuse       no terms (FORA: reuse D0)
"""
import math
from dataclasses import dataclass

import torch

MODES = ("hicache", "hi-taylor", "taylorseer", "reuse")


def hermite(n, x):
    """Physicists' Hermite polynomial H_n(x): H_0=1, H_1=2x, H_{n+1} = 2x H_n - 2n H_{n-1}."""
    h_prev, h = 1.0, 2.0 * x
    if n == 0:
        return h_prev
    for m in range(1, n):
        h_prev, h = h, 2.0 * x * h - 2.0 * m * h_prev
    return h


def coefficients(mode, order, sigma, k):
    """[c_1, ..., c_order] for a forecast k steps after the last full step.

    Uses HiCache's code convention: positive step distance k, differences (new - old)/delta in step
    order. Never evaluate at -k (that flips odd terms and extrapolates backwards)."""
    if mode == "reuse" or order <= 0:
        return []
    if mode == "hicache":
        return [sigma ** i * hermite(i, sigma * k) / math.factorial(i) for i in range(1, order + 1)]
    if mode == "hi-taylor":
        return [k ** i / math.factorial(i) * sigma ** (2 * i) for i in range(1, order + 1)]
    if mode == "taylorseer":
        return [k ** i / math.factorial(i) for i in range(1, order + 1)]
    raise ValueError(f"unknown forecast mode {mode!r}; choose one of {', '.join(MODES)}")


@dataclass
class History:
    """Finite differences [D0, D1, ...] of one slot, last updated at `position` (a step index)."""
    terms: list
    position: float

    @property
    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in self.terms)

    def compatible(self, feature):
        t = self.terms[0]
        return t.shape == feature.shape and t.dtype == feature.dtype


def _keep(t, device, owned):
    """A tensor to hold in the cache: moved to the cache device, copied unless freshly computed."""
    if device is not None and torch.device(device) != t.device:
        return t.to(device)
    return t if owned else t.clone()


def update(history, feature, position, max_order, warmup_steps, cache_device=None, owned=False):
    """New History after a full compute gave `feature` at `position` (HiCache's update rule).

        D0 = F(s_last);  D_i = (D_{i-1}(s_last) - D_{i-1}(s_prev)) / delta,  delta = s_last - s_prev

    An order i >= 1 is added only once `position > warmup_steps - 2` and order i-1 existed before.
    A second full compute at the same position (Heun's corrector lands on the next step's sigma)
    refreshes D0 and keeps the higher differences. The stored D0 is a copy of `feature`, never an
    alias (FLUX blocks add in place) unless the caller says the tensor is `owned`: freshly computed
    and written by nobody else. Differences are taken in the feature dtype, as the reference code
    does; `cache_device` (default: the feature's) is where the terms are kept."""
    if history is None or not history.compatible(feature):
        return History([_keep(feature, cache_device, owned)], position)
    distance = position - history.position
    if abs(distance) < 1e-6:
        return History([_keep(feature, cache_device, owned)] + history.terms[1:], position)
    terms = [feature]
    if position > warmup_steps - 2:
        for i in range(min(max_order, len(history.terms))):
            terms.append((terms[i] - history.terms[i].to(feature.device)) / distance)
    return History([_keep(t, cache_device, owned or i > 0) for i, t in enumerate(terms)], position)


def predict(history, mode, order, sigma, position, forecast_fn, out=None):
    """Forecast a slot at `position` from its history with `forecast_fn(terms, coeffs, out=)`.

    At k = 0 (a forecast at the very position of the last full compute) the cached D0 is returned:
    there is nothing to extrapolate. Terms kept on another device are brought to `out`'s device."""
    k = position - history.position
    coeffs = [] if k <= 1e-6 else coefficients(mode, min(order, len(history.terms) - 1), sigma, k)
    terms = history.terms[:len(coeffs) + 1]
    if out is not None and terms[0].device != out.device:
        terms = [t.to(out.device, non_blocking=True) for t in terms]
    return forecast_fn(terms, coeffs, out=out)


def coefficient_vector(history, mode, order, sigma, position):
    """[c_1, ..., c_order] of a forecast at `position`, zero-padded to `order` (terms the history
    lacks get zero, k = 0 gives all zeros): the coefficient form of `predict` for traced code."""
    k = position - history.position
    coeffs = [] if k <= 1e-6 else coefficients(mode, order, sigma, k)
    return list(coeffs) + [0.0] * (max(order, 0) - len(coeffs))


def predict_with(terms, coeffs, out):
    """out = terms[0] + sum_i coeffs[i] * terms[i + 1] in fp32, with `coeffs` a tensor: the forecast
    inside a compiled region (no Python number that changes per step reaches the graph)."""
    acc = terms[0].to(out.device, torch.float32)
    for i in range(1, len(terms)):
        acc = acc + coeffs[i - 1] * terms[i].to(out.device, torch.float32)
    return out.copy_(acc)
