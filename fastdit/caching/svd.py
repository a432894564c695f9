"""SVD-Cache: forecast the principal subspace of each cached feature, reuse its residual
("Forecast the Principal, Stabilize the Residual", arXiv 2601.07396, CVPR 2026).

A slot's feature F [tokens, D] splits against a per-slot orthonormal basis V [D, k] calibrated once:

    C = F V                 principal coefficients (k per token)
    R = F - C V^T           residual, high-frequency and low-energy: reused as is
    F_hat(s + j) = C_hat(s + j) V^T + R_s = F_s + (C_hat(s + j) - C_s) V^T

so a forecast is the last full feature plus a change that lives in the principal subspace. The
coefficient forecast C_hat is an EMA rule with history weight beta (the paper's rule
new = beta old + (1 - beta) observed; the paper quotes beta = 0.9, the default here is 0.3, measured
on the demo model, see docs/svdcache.md), per `ema_mode`:

    trend (default)  g = (C_s - C_p)/(s - p);  G_s = beta G_p + (1 - beta) g   (G starts at the first g)
                     C_hat(s + j) = C_s + j G_s
    level            L_s = beta L_p + (1 - beta) C_s   (L starts at C);   C_hat = L_s
    holt             L_s = (1 - beta) C_s + beta (L_p + (s - p) T_p);
                     T_s = (1 - beta) (L_s - L_p)/(s - p) + beta T_p   (L, T start at C_s, g)
                     C_hat(s + j) = L_s + j T_s

Until a slot has two full computes (trend, holt) the forecast is plain reuse. The change terms
(G V^T, (L - C) V^T, T V^T) are expanded once per full step, so a forecast step costs one fused
axpy per slot (kernels/forecast.py, shared with HiCache).

Calibration (`calibrate`) runs the uncached sampler once and accumulates, per slot, the channel Gram
matrix F^T F over the steps the cache will compute in full (all conds, tokens and batch rows); its
eigenvectors ranked by eigenvalue (= sigma^2 of the stacked features) are the basis, truncated to
the smallest k whose energy share reaches tau. V lives in channel space, so a basis calibrated at
one resolution serves any other.
"""
import dataclasses
import hashlib
import json
import logging
import os
from typing import Dict, Optional, Tuple

import torch

from ..adapters import for_model
from .interface import Shared, SlotKey
from .schedule import FULL, check_speed, describe_schedule

EMA_MODES = ("trend", "level", "holt")
SUBSPACES = ("basis", "none", "full")   # the calibrated basis; ablations: no decomposition / the whole space
CACHE_DEVICES = ("compute", "cpu")
BASIS_FOLDER = "fastdit_svd_bases"      # models/fastdit_svd_bases, registered with folder_paths by the nodes
FORMAT = "fastdit-svd-basis-1"
CALIBRATION_NODE = "SVD-Cache calibrate (one-time basis)"


def slot_name(slot: SlotKey) -> str:
    (kind, index), name = slot
    return f"{kind}.{index}.{name}"


def parse_slot_name(text: str) -> SlotKey:
    kind, index, name = text.split(".", 2)
    return (kind, int(index)), name


def model_layout(adapter) -> Tuple[SlotKey, ...]:
    """Every module slot of the model in block order (block granularity names for blocks without)."""
    slots = adapter.cache_slots(adapter)
    return tuple((ref.patch_key, name) for ref in adapter.blocks()
                 for name in (slots.module_slots(ref) or slots.streams(ref)))


def model_width(adapter) -> int:
    """Channels D of the cached features (the transformer's hidden size)."""
    hidden = getattr(adapter, "hidden_size", None)
    if hidden is None:
        hidden = getattr(adapter.model, "dim", None)
    return int(hidden)


def describe_layout(layout) -> str:
    blocks = {}
    for key, _ in layout:
        blocks[key] = blocks.get(key, 0) + 1
    kinds = {}
    for (kind, _), n in blocks.items():
        kinds.setdefault(kind.replace("_block", ""), []).append(n)
    return f"{len(layout)} slots in " + ", ".join(f"{len(v)} {k} blocks" for k, v in kinds.items())


def pack_version() -> str:
    try:
        import tomllib
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "pyproject.toml"), "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except Exception:
        return "unknown"


def conditioning_hash(*conds) -> str:
    """A short hash of conditioning tensors (which prompt a basis was calibrated on)."""
    h = hashlib.sha256()
    for cond in conds:
        for item in cond or []:
            t = item[0]
            if isinstance(t, torch.Tensor):
                h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class SVDBasis(Shared):
    """Per-slot truncated bases V_k [D, k] (stored fp16, orthonormal columns) with the energy spectrum
    and the calibration facts. Immutable by contract and shared, never copied, by model clones."""

    def __init__(self, bases: Dict[SlotKey, torch.Tensor], energy: Dict[SlotKey, torch.Tensor], meta: dict,
                 path: Optional[str] = None):
        self._bases = dict(bases)
        self._energy = dict(energy)
        self.meta = dict(meta)
        self.path = path

    # -- facts ---------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.meta["family"]

    @property
    def hidden_size(self) -> int:
        return int(self.meta["hidden_size"])

    @property
    def layout(self) -> Tuple[SlotKey, ...]:
        return tuple(parse_slot_name(s) for s in self.meta["slots"])

    def basis(self, slot: SlotKey) -> Optional[torch.Tensor]:
        return self._bases.get(slot)

    def ranks(self) -> Dict[SlotKey, int]:
        return {s: int(v.shape[1]) for s, v in self._bases.items()}

    @property
    def mean_rank(self) -> float:
        r = self.ranks()
        return sum(r.values()) / max(len(r), 1)

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self._bases.values())

    def label(self) -> str:
        where = os.path.basename(self.path) if self.path else "calibrated in this graph"
        return f"{where}: {self.family}, D={self.hidden_size}, tau={float(self.meta['tau']):g}, k mean {self.mean_rank:.0f}"

    def check_model(self, adapter, technique: str = "SVD-Cache"):
        """Raise ValueError naming both sides when this basis does not fit the model."""
        src = f"the basis ({os.path.basename(self.path)})" if self.path else "the basis"
        if self.family != adapter.family:
            raise ValueError(f"{technique}: {src} was calibrated on a {self.family} model, this model is "
                             f"{adapter.family} ({adapter.display_name}); calibrate a basis on this model with "
                             f"'{CALIBRATION_NODE}'")
        width = model_width(adapter)
        if self.hidden_size != width:
            raise ValueError(f"{technique}: {src} has hidden size {self.hidden_size}, this {adapter.family} model "
                             f"has {width}; calibrate a basis on this model with '{CALIBRATION_NODE}'")
        layout = model_layout(adapter)
        if tuple(self.layout) != layout:
            missing = [slot_name(s) for s in layout if s not in set(self.layout)]
            extra = [slot_name(s) for s in self.layout if s not in set(layout)]
            detail = "; ".join(x for x in (f"model slots without a basis: {', '.join(missing[:4])}" if missing else "",
                                           f"basis slots the model lacks: {', '.join(extra[:4])}" if extra else "")
                               if x)
            raise ValueError(f"{technique}: {src} has a slot layout of {describe_layout(self.layout)}, this model "
                             f"has {describe_layout(layout)} ({detail or 'different order'}); calibrate a basis on "
                             f"this model with '{CALIBRATION_NODE}'")

    # -- file ----------------------------------------------------------------------------------
    def save(self, path: str) -> str:
        from safetensors.torch import save_file
        tensors = {}
        for slot, v in self._bases.items():
            tensors[f"V.{slot_name(slot)}"] = v.detach().to("cpu", torch.float16).contiguous()
            tensors[f"S2.{slot_name(slot)}"] = self._energy[slot].detach().to("cpu", torch.float32).contiguous()
        meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in self.meta.items()}
        meta["format"] = FORMAT
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_file(tensors, path, metadata=meta)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str) -> "SVDBasis":
        name = os.path.basename(path)
        if not os.path.isfile(path):
            raise ValueError(f"SVD-Cache: basis file {name} not found ({path}); calibrate one with "
                             f"'{CALIBRATION_NODE}'")
        from safetensors import safe_open
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                raw = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise ValueError(f"SVD-Cache: basis file {name} is not a readable safetensors file "
                             f"(truncated or of another format: {type(e).__name__}: {e})") from e
        if raw.get("format") != FORMAT:
            raise ValueError(f"SVD-Cache: {name} is a safetensors file but not an SVD-Cache basis "
                             f"(format {raw.get('format')!r}, expected {FORMAT!r}); make one with '{CALIBRATION_NODE}'")
        meta = {}
        for k, v in raw.items():
            try:
                meta[k] = json.loads(v)
            except ValueError:
                meta[k] = v
        bases, energy = {}, {}
        for s in meta["slots"]:
            slot = parse_slot_name(s)
            if f"V.{s}" not in tensors or f"S2.{s}" not in tensors:
                raise ValueError(f"SVD-Cache: basis file {name} lacks the basis of slot {s} (damaged file)")
            bases[slot], energy[slot] = tensors[f"V.{s}"], tensors[f"S2.{s}"]
        return cls(bases, energy, meta, path=path)


# -- calibration ------------------------------------------------------------------------------
class GramAccumulator(Shared):
    """Observer of a calibration run: sum of F^T F (fp32, [D, D]) per slot over the full steps."""

    def __init__(self):
        self.grams: Dict[SlotKey, torch.Tensor] = {}
        self.rows: Dict[SlotKey, int] = {}
        self.steps = set()
        self.order = []
        self.meta = {}

    def __call__(self, slot, block_key, cond, feature, evaluation):
        if evaluation is not None and evaluation.mode != FULL:
            return
        key = (block_key, slot)
        f = feature.reshape(-1, feature.shape[-1]).float()
        g = self.grams.get(key)
        if g is None:
            g = self.grams[key] = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float32, device=f.device)
            self.rows[key] = 0
            self.order.append(key)
        g.addmm_(f.T, f)
        self.rows[key] += f.shape[0]
        if evaluation is not None:
            self.steps.add(evaluation.step)

    def bases(self, tau: float):
        """({slot: V_k [D, k]}, {slot: eigenvalues, descending}) with the smallest k reaching tau."""
        bases, energy = {}, {}
        for key in self.order:
            g = self.grams[key]
            evals, evecs = torch.linalg.eigh(g.double() if g.device.type == "cpu" else g)
            evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
            total = float(evals.sum())
            if total > 0:
                share = torch.cumsum(evals, 0) / total
                reached = torch.nonzero(share >= tau - 1e-9)
                k = int(reached[0]) + 1 if len(reached) else evals.numel()
            else:
                k = 0
            bases[key] = evecs[:, :k].to(torch.float16).cpu().contiguous()
            energy[key] = evals.float().cpu()
        return bases, energy


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """A compute-only run of the machinery: every block runs in full (the output is the uncached
    model's); the plan at `interval` tells the observer which steps the cache will compute in full."""
    interval: int
    warmup_steps: int
    observer: GramAccumulator
    start_percent: float = 0.0
    end_percent: float = 1.0
    granularity: str = "module"
    cache_device: str = "compute"
    technique: str = "SVD-Cache calibration"
    compute_only: bool = True

    def describe(self):
        return f"records F^T F at the full steps of N={self.interval}, warm-up {self.warmup_steps}"

    def make_forecaster(self):
        return _NoForecaster()


class _NoForecaster:
    def update(self, *a, **k):
        raise RuntimeError("a compute-only run stores no features")

    predict = output_spec = update

    def close(self):
        pass


CALIBRATE_KEY = "fastdit_svd_calibrate"


def record_grams(model, positive, negative, latent: dict, steps: int, cfg: float, seed: int, interval: int = 7,
                 warmup_steps: int = 3, sampler_name: str = "euler", scheduler: str = "simple"
                 ) -> Tuple[GramAccumulator, dict]:
    """Sample once without caching (ComfyUI's KSampler path, with its progress bar), accumulating each
    slot's F^T F at the steps the cache computes in full. Returns (accumulator, sampled latent dict)."""
    import nodes

    from .comfy_hooks import install
    if int(interval) < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    adapter = for_model(model, technique="SVD-Cache")
    acc = GramAccumulator()
    patched = install(model, CalibrationConfig(int(interval), int(warmup_steps), acc), CALIBRATE_KEY)
    out = nodes.common_ksampler(patched, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent)[0]
    layout = model_layout(adapter)
    seen = set(acc.order)
    if not seen:
        raise RuntimeError("SVD-Cache calibration saw no full compute (the sampler ran no model evaluation)")
    missing = [slot_name(s) for s in layout if s not in seen]
    if missing:
        raise RuntimeError(f"SVD-Cache calibration recorded {len(seen)} of the model's {len(layout)} slots "
                           f"(missing e.g. {missing[0]}): the model's blocks did not run their module math "
                           "(attention patches or an unknown block interface); calibrate without them")
    acc.meta = {"family": adapter.family, "hidden_size": model_width(adapter),
                "slots": [slot_name(s) for s in layout], "steps": int(steps), "interval": int(interval),
                "warmup_steps": int(warmup_steps), "full_steps": sorted(acc.steps),
                "resolution": list(latent["samples"].shape[2:]), "cfg": float(cfg),
                "sampler": f"{sampler_name}/{scheduler}", "seed": int(seed),
                "prompt_hash": conditioning_hash(positive, negative), "pack_version": pack_version()}
    return acc, out


def basis_from_grams(acc: GramAccumulator, tau: float) -> SVDBasis:
    """Eigen-decompose the accumulated Gram matrices: V_k with the smallest k reaching `tau`."""
    if not 0.0 < float(tau) <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    layout = [parse_slot_name(s) for s in acc.meta["slots"]]
    bases, energy = acc.bases(float(tau))
    basis = SVDBasis({s: bases[s] for s in layout}, {s: energy[s] for s in layout}, dict(acc.meta, tau=float(tau)))
    ranks = basis.ranks().values()
    logging.info(f"SVD-Cache calibration: {len(layout)} slots from {len(acc.steps)} full steps of "
                 f"{acc.meta['steps']}; rank at tau {float(tau):g}: mean {basis.mean_rank:.1f}, min {min(ranks)}, "
                 f"max {max(ranks)} of {acc.meta['hidden_size']}; bases {basis.nbytes / 2 ** 20:.1f} MiB")
    return basis


def calibrate(model, positive, negative, latent: dict, steps: int, cfg: float, seed: int, interval: int = 7,
              tau: float = 0.85, warmup_steps: int = 3, sampler_name: str = "euler", scheduler: str = "simple"
              ) -> Tuple[SVDBasis, dict]:
    """One uncached sampling run -> (the per-slot bases at `tau`, the sampled latent dict)."""
    if not 0.0 < float(tau) <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    acc, out = record_grams(model, positive, negative, latent, steps, cfg, seed, interval, warmup_steps,
                            sampler_name, scheduler)
    return basis_from_grams(acc, tau), out


def basis_filename(basis: SVDBasis) -> str:
    m = basis.meta
    res = "x".join(str(x) for x in m["resolution"])
    return (f"{m['family']}_d{m['hidden_size']}_{res}_N{m['interval']}_tau{float(m['tau']):g}_"
            f"{m['prompt_hash'][:8]}.safetensors")


# -- the cache --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SVDCacheConfig:
    """SVD-Cache settings (defaults: N=7, beta 0.3, trend, 3 warm-up steps on FLUX.1-dev's schedule).

    basis: an SVDBasis (Shared: every clone of the patched model refers to the same one)
    subspace: "basis" (the paper), or the ablations "none" (no decomposition: reuse the whole feature)
              and "full" (the EMA rule on the whole feature, V = identity)
    speed: "custom" (interval and warmup_steps as given) or a preset that derives both from the run's
           step count (schedule.resolve_schedule; warmup_steps then only sets where slopes may start)"""
    basis: Optional[SVDBasis] = None
    interval: int = 7
    beta: float = 0.3
    ema_mode: str = "trend"
    warmup_steps: int = 3
    start_percent: float = 0.0
    end_percent: float = 1.0
    cache_device: str = "compute"
    subspace: str = "basis"
    granularity: str = "module"
    technique: str = "SVD-Cache"
    speed: str = "custom"

    def __post_init__(self):
        check_speed(self.speed)
        if self.ema_mode not in EMA_MODES:
            raise ValueError(f"ema_mode must be one of {', '.join(EMA_MODES)}, not {self.ema_mode!r}")
        if self.subspace not in SUBSPACES:
            raise ValueError(f"subspace must be one of {', '.join(SUBSPACES)}, not {self.subspace!r}")
        if self.cache_device not in CACHE_DEVICES:
            raise ValueError(f"cache_device must be one of {', '.join(CACHE_DEVICES)}, not {self.cache_device!r}")
        if self.granularity != "module":
            raise ValueError("SVD-Cache caches per-module slots only (granularity 'module')")
        if int(self.interval) < 1:
            raise ValueError(f"interval must be >= 1 (1 = compute every step), got {self.interval}")
        if not 0.0 <= float(self.beta) < 1.0:
            raise ValueError(f"beta (EMA history weight) must be in [0, 1), got {self.beta}")
        if int(self.warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise ValueError("need 0 <= start_percent <= end_percent <= 1, got "
                             f"start_percent={self.start_percent}, end_percent={self.end_percent}")
        if self.subspace == "basis" and self.basis is None:
            raise ValueError(f"SVD-Cache needs a basis: connect '{CALIBRATION_NODE}' to the basis input or "
                             "pick a saved basis file")

    def describe(self, interval: Optional[int] = None, warmup_steps: Optional[int] = None) -> str:
        """Settings for the log line; pass the run's resolved interval and warm-up (resolve_schedule)."""
        sub = {"basis": f"k mean {self.basis.mean_rank:.0f}" if self.basis is not None else "",
               "none": "no decomposition", "full": "whole space"}[self.subspace]
        return f"{self.ema_mode}, {describe_schedule(self, interval, warmup_steps)}, β={self.beta:g}, {sub}"

    def make_forecaster(self):
        return SVDForecaster(self)


@dataclasses.dataclass
class SVDState:
    """One slot of one cond: the last full feature (terms[0]) and the change terms of the forecast
    F_hat(s + j) = terms[0] + sum_i coeff_i(j) terms[i]; coefficient-space EMA state in fp32."""
    terms: list
    position: float
    coeffs: Optional[torch.Tensor]       # C_s [rows, tokens, k]
    level: Optional[torch.Tensor] = None
    trend: Optional[torch.Tensor] = None

    @property
    def nbytes(self):
        extra = [t for t in (self.coeffs, self.level, self.trend) if t is not None]
        return sum(t.numel() * t.element_size() for t in self.terms + extra)


class SVDForecaster:
    """The run's forecaster (interface.Forecaster); holds fp32 device copies of the bases for one run."""

    def __init__(self, config: SVDCacheConfig):
        self.config = config
        self.beta = float(config.beta)
        self.mode = config.ema_mode
        self.warmup_steps = int(config.warmup_steps)
        self._v = {}

    def _basis(self, slot, feature):
        key = (slot, feature.device)
        if key not in self._v:
            d = feature.shape[-1]
            if self.config.subspace == "none":
                v = None
            elif self.config.subspace == "full":
                v = torch.eye(d, dtype=torch.float32, device=feature.device)
            else:
                v = self.config.basis.basis(slot)
                if v is not None:
                    if v.shape[0] != d:
                        raise ValueError(f"SVD-Cache: the basis of slot {slot_name(slot)} has {v.shape[0]} channels, "
                                         f"the model's feature has {d}")
                    v = v.to(feature.device, torch.float32)
            self._v[key] = v
        return self._v[key]

    def update(self, state, feature, position, slot, cache_device=None, owned=False):
        from ...kernels.lowrank import project
        v = self._basis(slot, feature)
        keep = lambda t: t if cache_device is None or torch.device(cache_device) == t.device else t.to(cache_device)  # noqa: E731
        base = keep(feature if owned else feature.clone())
        if v is None or v.shape[1] == 0:
            return SVDState([base], position, None)
        c = project(feature.reshape(-1, feature.shape[-1]), v).reshape(*feature.shape[:-1], v.shape[1])
        fresh = (state is None or state.coeffs is None or state.terms[0].shape != feature.shape
                 or state.terms[0].dtype != feature.dtype)
        if fresh:
            return SVDState([base], position, keep(c), level=keep(c) if self.mode == "level" else None)
        dev = feature.device
        prev_c = state.coeffs.to(dev)
        level = None if state.level is None else state.level.to(dev)
        trend = None if state.trend is None else state.trend.to(dev)
        distance = position - state.position
        # like HiCache's differences, slopes start between the last two warm-up steps (the very first
        # steps move differently from the rest of the trajectory)
        if abs(distance) >= 1e-6 and position > self.warmup_steps - 2:
            g = (c - prev_c) / distance
            b = self.beta
            if self.mode == "trend":
                trend = g if trend is None else b * trend + (1 - b) * g
            elif self.mode == "level":
                level = b * level + (1 - b) * c
            else:  # holt
                if trend is None:
                    level, trend = c, g
                else:
                    new_level = (1 - b) * c + b * (level + distance * trend)
                    trend = (1 - b) * (new_level - level) / distance + b * trend
                    level = new_level
        # (a second full compute at the same position, Heun's corrector, refreshes F and C only)
        vt = v.T
        terms = [base]
        if self.mode in ("level", "holt") and level is not None:
            terms.append(keep(((level - c) @ vt).to(feature.dtype)))
        if self.mode in ("trend", "holt") and trend is not None:
            terms.append(keep((trend @ vt).to(feature.dtype)))
        return SVDState(terms, position, keep(c), None if level is None else keep(level),
                        None if trend is None else keep(trend))

    def _coefficients(self, state, j):
        # terms: [F_s] + ([(L - C) V^T] for level/holt) + ([G V^T or T V^T] for trend/holt)
        n = len(state.terms) - 1
        if n == 0:
            return []
        if self.mode == "trend":
            return [j]
        if self.mode == "level":
            return [1.0]
        return [1.0, j][:n]

    def predict(self, state, position, out):
        from ...kernels.forecast import forecast
        j = position - state.position
        coeffs = [] if j <= 1e-6 else self._coefficients(state, j)
        terms = state.terms[:len(coeffs) + 1]
        if terms[0].device != out.device:
            terms = [t.to(out.device, non_blocking=True) for t in terms]
        return forecast(terms, coeffs, out=out)

    def output_spec(self, state):
        return tuple(state.terms[0].shape), state.terms[0].dtype

    def coefficients(self, state, position):
        """The forecast's coefficients at `position`, zero-padded to two (traced forecasts)."""
        j = position - state.position
        coeffs = [] if j <= 1e-6 else self._coefficients(state, j)
        return list(coeffs) + [0.0] * (2 - len(coeffs))

    def predict_with(self, state, coeffs, out):
        from .forecasters import predict_with
        return predict_with(state.terms, coeffs, out)

    def close(self):
        self._v.clear()


def register_basis_folder() -> str:
    """Register models/fastdit_svd_bases with ComfyUI's folder_paths (idempotent); its first path."""
    import folder_paths
    if BASIS_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[BASIS_FOLDER] = (
            [os.path.join(folder_paths.models_dir, BASIS_FOLDER)], {".safetensors"})
    return folder_paths.get_folder_paths(BASIS_FOLDER)[0]
