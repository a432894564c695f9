"""SpecEdit rows: the draft -> verify pair at its own step count.

    specedit                                  the balanced preset (docs/specedit.md)
    specedit:steps=14,fraction=0.4,threshold=0.03,measure=vae,stride=4,dilation=1,blend=0.8
    specedit:budget=0.25                      refine the 25 % most changed cells instead of a threshold
    specedit:stride=0                         no coverage set (ablation)
    specedit:preset=coarse                    the coarse draft (14 steps: 6 at 1/4 of the tokens + 8)
    specedit:resolution=coarse                a coarse draft with the preset's other settings
    specedit:ring=all                         blend every ring cell (also those the edit changed)
    specedit:stack=hicache                    another configuration's model patch (its defaults) under SpecEdit

`steps` is the pair's total (draft + verify; default: the preset's). The row keeps what the last
run refined (`last_refined`, latent pixels; its blended boundary ring `last_ring`; `last_summary`) for the region metrics of
bench/specedit.py. `vae` is set by the harness that knows the model's VAE (default: the demo's).
"""
from . import Config, register

PRESETS = {  # total steps, draft fraction, threshold, coverage stride, draft resolution, ring blending
    "balanced": dict(steps=10, fraction=0.2, threshold=0.015, stride=4, resolution="auto", ring="unchanged"),
    "coarse": dict(steps=14, fraction=0.4, threshold=0.03, stride=4, resolution="coarse", ring="unchanged"),
    "quality": dict(steps=20, fraction=0.4, threshold=0.02, stride=4, resolution="coarse", ring="all"),
    "fast": dict(steps=10, fraction=0.5, threshold=0.03, stride=0, resolution="coarse", ring="all"),
}


class SpecEditConfig(Config):
    edits_only = True

    def __init__(self, name, draft, verify, steps, prepare=None):
        super().__init__(name, prepare=prepare)
        self.draft, self.verify, self.steps = draft, verify, steps
        self.vae = None
        self.last_refined = None
        self.last_ring = None
        self.last_summary = None

    def sample(self, model, noise, positive, negative, latent, steps, cfg, seed):
        from fastdit.dynres.layout import as5d
        from fastdit.specedit.sampler import run_draft, run_verify
        vae = self.vae
        if vae is None:
            from demo.latent_space import LinearPatchVAE
            vae = LinearPatchVAE(latent_dims=3 if latent.ndim == 5 else 2)
        draft, _, _ = run_draft(model, positive, negative, {"samples": latent}, vae, seed, self.steps or steps, cfg,
                                self.draft)
        out, _, summary = run_verify(model, draft, self.verify)
        grid = draft.grid
        from fastdit.specedit.discrepancy import unlock
        from fastdit.specedit.locking import ring_pixels
        unlocked = unlock(draft.score, self.verify)[1]
        self.last_refined = grid.fine_pixels(unlocked)[:, 0, 0]   # [B, H, W]
        self.last_ring = ring_pixels(grid, unlocked)[:, 0, 0]
        self.last_summary = summary
        return out["samples"]


@register("specedit")
def specedit(preset="balanced", steps=None, fraction=None, factor=2, measure="vae", threshold=None, budget=0.0,
             stride=None, dilation=1, blend=0.8, positions="fine", resolution=None, ring=None,
             stack=None):
    from fastdit.specedit.options import DraftOptions, VerifyOptions
    if preset not in PRESETS:
        raise ValueError(f"specedit preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    p = PRESETS[preset]
    draft = DraftOptions(fraction if fraction is not None else p["fraction"], factor, measure,
                         resolution or p["resolution"]).validated()
    verify = VerifyOptions(threshold if threshold is not None else p["threshold"], budget,
                           stride if stride is not None else p["stride"], dilation, blend,
                           positions=positions, ring=ring or p["ring"]).validated()
    prepare = None
    if stack:
        from . import build
        prepare = build(stack).prepare
    return SpecEditConfig("specedit", draft, verify, steps or p["steps"], prepare)
