"""SpecEdit's draft and verify passes: two k-diffusion sampler functions over one sigma schedule,
and the entry points the nodes call (through ComfyUI's own sampling path: conditioning, model
loading, wrappers, CFG and previews are ComfyUI's).

`sample_draft` runs the first steps at full resolution (DraftOptions.resolution = "full") or with
every cell coarse (target and reference tokens on the coarse grid, via the mixed-resolution
DIFFUSION_MODEL wrapper of dynres) and keeps its state and clean estimate. `sample_verify`
continues from that state on verify's cells (a coarse draft's unlocked cells expand to full
resolution by the same-t Haar/Hadamard expansion with the run's own noise; a full draft's locked
cells become coarse), locked cells are reset to the re-noised source before every step, and at the
end the source is pasted back (locking.py).
"""
import logging
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import trange

from ..adapters import UnsupportedInputError, UnsupportedModelError, for_model
from ..dynres.cost import run_costs
from ..dynres.forward import LAYOUT_KEY, mixed_resolution_wrapper
from ..dynres.haar import nearest_up
from ..dynres.layout import CellGrid, MixedLayout, as5d
from ..dynres.noise_field import coarse_start
from ..dynres.transition import same_t
from .discrepancy import boundary_ring, latent_score, unlock, vae_score
from .locking import changed_cells, compose, lock
from .options import AUTO_COARSE_MIN_CELLS, FAMILIES, SUPPORTED, DraftOptions, VerifyOptions

log = logging.getLogger("FastDiT")
WRAPPER_KEY = "fastdit_specedit"


def specedit_adapter(model):
    """The family adapter of a model SpecEdit can edit with, else an error naming the supported ones."""
    try:
        adapter = for_model(model, technique="SpecEdit")
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"SpecEdit edits with {SUPPORTED}; {e}") from None
    if adapter.family not in FAMILIES:
        raise UnsupportedModelError(f"SpecEdit edits with {SUPPORTED}; this model is {adapter.display_name}.")
    return adapter


def _fix_empty_latent(model, latent):
    import inspect

    import comfy.sample
    fix = comfy.sample.fix_empty_latent_channels
    params = inspect.signature(fix).parameters
    extra = {k: latent[k] for k in ("downscale_ratio_spacial", "downscale_ratio_temporal") if k in params and k in latent}
    return fix(model, latent["samples"], **extra)


def source_of(positive, samples):
    """The source image: the first reference latent of the positive conditioning, in the latent's
    layout, checked to have its size."""
    refs = [r for _, extras in positive for r in (extras.get("reference_latents") or [])]
    if not refs:
        raise UnsupportedInputError(
            "SpecEdit needs the source image as a reference latent in the positive conditioning (ReferenceLatent "
            "for FLUX.1 Kontext, TextEncodeQwenImageEdit(Plus) for Qwen-Image-Edit); this conditioning has none.")
    src = refs[0]
    if src.ndim == 5 and samples.ndim == 4 and src.shape[2] == 1:
        src = src.squeeze(2)
    elif src.ndim == 4 and samples.ndim == 5:
        src = src.unsqueeze(2)
    if tuple(src.shape[-2:]) != tuple(samples.shape[-2:]) or src.shape[1] != samples.shape[1]:
        raise UnsupportedInputError(
            f"SpecEdit compares the edit with the reference image token by token, so the latent must have the "
            f"reference's size: the latent is {samples.shape[-1]}x{samples.shape[-2]} ({samples.shape[1]} channels), "
            f"the reference {src.shape[-1]}x{src.shape[-2]} ({src.shape[1]} channels) (width x height in latent "
            f"pixels). Make the empty latent from the reference image's size (or VAE-encode the source itself).")
    return src.to(samples.dtype)


def _with_wrapper(extra_args, layout, sigmas):
    import comfy.patcher_extension as pe
    extra = dict(extra_args)
    opts = pe.copy_nested_dicts(extra.get("model_options", {}))
    opts.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
    pe.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, mixed_resolution_wrapper, opts,
                            is_model_options=True)
    opts["transformer_options"][LAYOUT_KEY] = layout
    extra["model_options"] = opts
    return extra


def _checks(model, x, extra_args, who):
    import comfy.model_sampling
    base = model.inner_model.inner_model
    if not isinstance(base.model_sampling, comfy.model_sampling.CONST):
        raise UnsupportedInputError(f"SpecEdit {who} needs a rectified-flow model ({SUPPORTED}).")
    if extra_args.get("denoise_mask") is not None:
        raise UnsupportedInputError("SpecEdit cannot inpaint: remove the latent's noise_mask.")
    if "easycache" in extra_args.get("model_options", {}).get("transformer_options", {}):
        raise UnsupportedInputError("SpecEdit cannot run under ComfyUI's EasyCache / LazyCache (they compare the "
                                    "full-size latent across resolution changes); stack FastDiT's HiCache instead.")
    noise = getattr(model, "noise", None)
    if noise is None or noise.shape != x.shape:
        raise UnsupportedInputError(f"SpecEdit {who} must run through ComfyUI's KSAMPLER, which provides its noise.")
    return base, noise


def draft_layout(adapter, grid: CellGrid, up: torch.Tensor) -> MixedLayout:
    """The draft's token set: every cell coarse (a coarse draft, coarse-grid positions) or every
    cell fine (a full-resolution draft: the model's own forward)."""
    return MixedLayout(adapter, grid, up, "fine" if bool(up.all()) else "coarse", stage=1)


@dataclass
class _DraftRun:
    options: DraftOptions
    layouts: list = field(default_factory=list)
    carrier: torch.Tensor = None
    x0: torch.Tensor = None
    noise: torch.Tensor = None


@torch.no_grad()
def sample_draft(model, x, sigmas, extra_args=None, callback=None, disable=None, run=None):
    """SpecEdit draft: Euler over `sigmas`, at full resolution or with target and reference tokens
    on the coarse grid (every cell coarse, from the coarse state of the run's noise field)."""
    extra_args = {} if extra_args is None else extra_args
    base, noise = _checks(model, x, extra_args, "draft")
    grid = CellGrid.of(x.shape, run.options.factor)
    adapter = specedit_adapter(base)
    full = run.options.resolution == "full"
    up = torch.full((x.shape[0], *grid.cell_shape), full, dtype=torch.bool, device=x.device)
    layout = draft_layout(adapter, grid, up)
    run.layouts.append(layout)
    extra = _with_wrapper(extra_args, layout, sigmas)
    x5 = as5d(x)
    x = grid.merge(x5, grid.spread(coarse_start(x5, as5d(noise).to(x), float(sigmas[0]), grid)), up).view(x.shape)
    s_in = x.new_ones([x.shape[0]])
    denoised = x
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma = sigmas[i]
        denoised = model(x, sigma * s_in, **extra)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x = x + (x - denoised) / sigma * (sigmas[i + 1] - sigma)
    run.carrier, run.x0, run.noise = x.clone(), denoised.clone(), noise.clone()
    return x


@dataclass
class SpecEditDraft:
    """The state a draft hands to verify (the SPECEDIT_DRAFT type). Never modified by verify."""
    base_model: weakref.ref       # the model the draft ran (verify must get the same one)
    family: str
    positive: list
    negative: list
    cfg: float
    seed: int
    sigmas: torch.Tensor          # the whole schedule
    draft_steps: int
    options: DraftOptions
    latent_shape: tuple
    carrier: torch.Tensor         # model space, at sigmas[draft_steps]
    x0: torch.Tensor              # the draft's clean estimate, model space
    noise: torch.Tensor           # the run's noise (field)
    source: torch.Tensor          # the reference latent (latent format, the latent's layout)
    score: torch.Tensor           # discrepancy per cell [B, T, Hc, Wc]
    measure_view: str
    image_size: tuple             # (height, width) of the decoded image
    layouts: list                 # the draft's MixedLayouts (token counts, for the cost)
    hidden_size: int

    @property
    def grid(self) -> CellGrid:
        return CellGrid.of(self.latent_shape, self.options.factor)


def cells_to_image(cells: torch.Tensor, grid: CellGrid, image_size, fill: float = 0.0) -> torch.Tensor:
    """Per-cell values [B, T, Hc, Wc] as a MASK [B*T, h, w] at the image size (edge strip `fill`)."""
    b, t = cells.shape[:2]
    px = torch.full((b, t, grid.height, grid.width), float(fill))
    ch, cw = grid.covered
    px[..., :ch, :cw] = nearest_up(cells.float().cpu(), grid.cell_pixels)
    return F.interpolate(px.view(b * t, 1, grid.height, grid.width), size=tuple(image_size), mode="nearest")[:, 0]


def image_to_cells(mask: torch.Tensor, grid: CellGrid, batch: int) -> torch.Tensor:
    """A MASK [N, h, w] (any size of the image's aspect ratio) -> per-cell maximum [B, T, Hc, Wc]."""
    if mask.ndim == 2:
        mask = mask[None]
    h, w = mask.shape[-2:]
    if abs(h * grid.width - w * grid.height) > max(grid.width, grid.height) * max(h, w) / min(grid.cell_rows, grid.cell_cols, 8):
        raise UnsupportedInputError(
            f"SpecEdit mask override is {w}x{h} pixels, but the image is {grid.width}x{grid.height} latent pixels: "
            f"the mask must have the image's aspect ratio (e.g. the draft's mask output, or a mask of the "
            f"decoded image's size).")
    if mask.shape[0] not in (1, batch):
        raise UnsupportedInputError(f"SpecEdit mask override has {mask.shape[0]} masks for a batch of {batch}.")
    m = F.interpolate(mask.float()[:, None], size=(grid.height, grid.width), mode="area")[:, 0]
    ch, cw = grid.covered
    m = m[..., :ch, :cw].reshape(m.shape[0], grid.cell_rows, ch // grid.cell_rows, grid.cell_cols, cw // grid.cell_cols)
    return m.amax((2, 4))[:, None].expand(batch, grid.frames, -1, -1).clone()


def _decode(vae, latent):
    img = vae.decode(latent)
    return img.reshape(-1, *img.shape[-3:]) if img.ndim == 5 else img


def run_draft(model, positive, negative, latent, vae, seed: int, steps: int, cfg: float, options: DraftOptions,
              scheduler: str = "simple"):
    """The draft node's work -> (SpecEditDraft, draft image [B, h, w, 3], discrepancy MASK [B, h, w])."""
    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview

    from ..dynres.fresco import check_conditioning
    options = options.validated()
    adapter = specedit_adapter(model)
    if latent.get("noise_mask") is not None:
        raise UnsupportedInputError("SpecEdit cannot inpaint: remove the latent's noise_mask (Set Latent Noise Mask).")
    check_conditioning([extras for cond in (positive, negative) for _, extras in cond], where="SpecEdit")
    samples = _fix_empty_latent(model, latent)
    source = source_of(positive, samples)
    grid = CellGrid.of(samples.shape, options.factor)
    if grid.cells == 0:
        raise UnsupportedInputError(f"SpecEdit: a {samples.shape[-1]}x{samples.shape[-2]} latent is too small for "
                                    f"coarse factor {options.factor} (a cell is {2 * options.factor} latent pixels).")
    chosen = options.for_latent(samples.shape)
    if chosen.resolution != options.resolution:
        log.info("SpecEdit draft: resolution auto -> %s (%d x %d cells of %d latent pixels; coarse from %d per side)",
                 chosen.resolution, grid.cell_rows, grid.cell_cols, grid.cell_pixels, AUTO_COARSE_MIN_CELLS)
    options = chosen
    n_draft = options.draft_steps(steps)
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).cpu()
    run = _DraftRun(options)
    sampler = comfy.samplers.KSAMPLER(sample_draft, extra_options={"run": run})
    callback = latent_preview.prepare_callback(model, n_draft)
    comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas[:n_draft + 1], positive, negative, samples,
                               callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    store = comfy.model_management.intermediate_device()
    base = model.model
    x0_latent = base.process_latent_out(run.x0.float()).to(store)
    src = source.to(store).float().expand_as(x0_latent)
    if options.measure == "latent":
        score, view = latent_score(run.x0.float().to(store), base.process_latent_in(src), grid), "latent"
    else:
        score, view = vae_score(vae, x0_latent, src, grid)
    image = _decode(vae, x0_latent)
    draft = SpecEditDraft(weakref.ref(base), adapter.family, positive, negative, float(cfg), int(seed), sigmas, n_draft, options,
                          tuple(samples.shape), run.carrier.to(store), run.x0.to(store), run.noise.to(store), source,
                          score.cpu(), view, tuple(image.shape[1:3]), run.layouts, adapter.hidden_size)
    mask = cells_to_image(score.clamp(0, 1), grid, draft.image_size)
    at = "full resolution" if options.resolution == "full" else f"1/{options.factor} resolution"
    log.info("SpecEdit draft: %d of %d steps at %s (%s discrepancy, %s): %.0f%% of cells at >= 0.1",
             n_draft, steps, at, options.measure, view, 100 * float((score >= 0.1).float().mean()))
    return draft, image, mask


@dataclass
class _VerifyRun:
    draft: SpecEditDraft
    unlocked: torch.Tensor
    options: VerifyOptions
    layouts: list = field(default_factory=list)


def _to_verify_layout(grid: CellGrid, x5: torch.Tensor, unlocked: torch.Tensor, draft, noise: torch.Tensor,
                      sigma: float) -> torch.Tensor:
    """The draft's carrier on verify's cells: a coarse draft's unlocked cells expand to full
    resolution (same-t, from the draft's estimate); a full-resolution draft's locked cells
    become coarse (block means with unit-variance noise)."""
    if draft.options.resolution == "full":
        return grid.merge(x5, grid.spread(coarse_start(x5, noise, sigma, grid)), unlocked)
    new = grid.fine_pixels(unlocked) & ~grid.fine_pixels(torch.zeros_like(unlocked))
    return same_t(grid, x5, new, sigma, as5d(draft.x0.to(x5)), noise, "hadamard")[0]


@torch.no_grad()
def sample_verify(model, x, sigmas, extra_args=None, callback=None, disable=None, run=None):
    """SpecEdit verify: from the draft's state, unlocked cells go to full resolution (same-t
    expansion of the draft's estimate with the field's detail noise); before every Euler step the
    locked cells are reset to the re-noised source. (run_verify pastes the source back, in the
    latent's own format so that locked pixels are the source bit for bit.)"""
    extra_args = {} if extra_args is None else extra_args
    draft = run.draft
    base, _ = _checks(model, x, extra_args, "verify")
    if tuple(x.shape) != tuple(draft.carrier.shape):
        raise UnsupportedInputError(f"SpecEdit verify: the draft holds a latent of shape {tuple(draft.carrier.shape)}, "
                                    f"the sampler got {tuple(x.shape)}.")
    grid = draft.grid
    unlocked = run.unlocked.to(x.device)
    noise = as5d(draft.noise.to(x))
    source = as5d(base.process_latent_in(draft.source.to(x))).expand(x.shape[0], *as5d(x).shape[1:])
    layout = MixedLayout(specedit_adapter(base), grid, unlocked, run.options.positions, stage=2)
    run.layouts.append(layout)
    extra = _with_wrapper(extra_args, layout, sigmas)
    x5 = as5d(draft.carrier.to(x))
    x5 = _to_verify_layout(grid, x5, unlocked, draft, noise, float(sigmas[0]))
    x = x5.reshape(x.shape)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma = sigmas[i]
        x = lock(grid, as5d(x), unlocked, source, noise, float(sigma)).reshape(x.shape)
        denoised = model(x, sigma * s_in, **extra)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x = x + (x - denoised) / sigma * (sigmas[i + 1] - sigma)
    return x


def check_draft(model, draft) -> None:
    if not isinstance(draft, SpecEditDraft):
        raise UnsupportedInputError(f"SpecEdit verify needs the draft output of 'SpecEdit draft', not {type(draft).__name__}.")
    if getattr(model, "model", None) is not draft.base_model():
        raise UnsupportedInputError(
            "SpecEdit verify got another model than its draft: connect the same model (patches such as HiCache "
            "may differ) to both 'SpecEdit draft' and 'SpecEdit verify'.")


def run_verify(model, draft: SpecEditDraft, options: VerifyOptions, mask=None):
    """The verify node's work -> (LATENT dict, refined-cells MASK [B, h, w], summary dict)."""
    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview
    options = options.validated()
    check_draft(model, draft)
    grid = draft.grid
    batch = draft.latent_shape[0]
    score = draft.score if mask is None else image_to_cells(mask, grid, batch)
    edited, unlocked, is_global = unlock(score, options)
    cells = grid.cells
    share = float(edited.flatten(1).float().mean(1).max())
    if is_global:
        log.info("SpecEdit verify: a global edit (%.0f%% of cells changed, over %.0f%%): running every cell at full "
                 "resolution, nothing locked.", 100 * share, 100 * options.global_share)
    run = _VerifyRun(draft, unlocked, options)
    sampler = comfy.samplers.KSAMPLER(sample_verify, extra_options={"run": run})
    sigmas = draft.sigmas[draft.draft_steps:]
    latent = torch.zeros(draft.latent_shape)
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    out = comfy.sample.sample_custom(model, draft.noise, draft.cfg, sampler, sigmas, draft.positive, draft.negative,
                                     latent, callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
                                     seed=draft.seed)
    cost, full = run_costs(draft.layouts + run.layouts, draft.hidden_size)
    ratio = full / cost if cost else 1.0
    n_up = int(unlocked.flatten(1).sum(1).max())
    summary = {"cells": cells, "edited": int(edited.flatten(1).sum(1).max()), "refined": n_up,
               "refined_share": n_up / cells if cells else 1.0, "global": is_global, "cost_ratio": ratio}
    log.info("SpecEdit: %d draft steps at 1/%d + %d verify steps; %d of %d cells refined (%d edited, dilation %d, "
             "coverage stride %d)%s; cost %.3f of %d full-resolution steps (%.2fx)", draft.draft_steps,
             draft.options.factor, len(sigmas) - 1, n_up, cells, summary["edited"], options.dilation,
             options.coverage_stride, ", global edit" if is_global else "", 1 / ratio, len(draft.sigmas) - 1, ratio)
    refined = cells_to_image(unlocked, grid, draft.image_size, fill=1.0)
    out = out.to(comfy.model_management.intermediate_device())
    source = as5d(draft.source.to(out)).expand_as(as5d(out))
    keep = None
    if options.ring == "unchanged":   # ring cells the edit changed are part of it: not blended
        base = model.model
        keep = changed_cells(grid, as5d(base.process_latent_in(out)),
                             as5d(base.process_latent_in(draft.source.to(out))), options.threshold).to(out.device)
        keep &= boundary_ring(unlocked.to(out.device))
        summary["ring_unblended"] = int(keep.flatten(1).sum(1).max())
    out = compose(grid, as5d(out), unlocked.to(out.device), source, options.blend, keep).reshape(out.shape)
    return {"samples": out}, refined, summary
