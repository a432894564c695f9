"""Models the bench can run, each with its prompts (conditionings), latent size and scoring.

`load(spec)`: `tiny-<family>` (a tiny random model of any supported family, see
fastdit.testing.tiny_models), `demo-flux` / `demo-kontext` / `demo-flux-open` (the trained demo models) or the path of
demo-model weights (`python -m demo.train --export`), or the path of a diffusion-model checkpoint
(FLUX.1 or Qwen-Image layout, as ComfyUI's UNETLoader reads it; conditioned with random text
features, decoded with the demo's linear patch VAE, so images are comparable but not meaningful).
"""
import dataclasses
import os
from typing import Callable, Optional

import torch

from fastdit.testing import tiny_models


@dataclasses.dataclass
class Job:
    """One (prompt, seed) cell of the bench: the same for every configuration."""
    label: str
    positive: list
    negative: list
    latent: torch.Tensor
    seed: int
    score: Optional[Callable] = None           # images [B,H,W,3] -> {metric: value}
    source: Optional[torch.Tensor] = None      # edits: the source image [1,H,W,3]
    unedited_mask: Optional[torch.Tensor] = None  # edits: [1,H,W], 1 where the edit must not change pixels


class BenchModel:
    name = "?"
    default_cfg = 1.0

    def __init__(self, model, vae):
        self.model = model
        self.vae = vae

    def jobs(self, n_prompts, seeds, height, width):
        raise NotImplementedError

    def decode(self, latent):
        return self.vae.decode(latent)


class TinyModel(BenchModel):
    """A tiny random model: prompts are random text features (seeded per prompt index)."""

    def __init__(self, family):
        from demo.latent_space import LinearPatchVAE
        self.family = family
        self.name = f"tiny-{family}"
        super().__init__(tiny_models.make_model(family, seed=0),
                         LinearPatchVAE(latent_dims=2 if family in ("flux", "flux_kontext") else 3))

    def jobs(self, n_prompts, seeds, height, width):
        edit = self.family in ("flux_kontext", "qwen_image_edit")
        out = []
        for p in range(n_prompts):
            ref = tiny_models.reference_latent(self.family, height, width, seed=1000 + p) if edit else None
            pos = tiny_models.conditioning(self.family, seed=100 + p, reference=ref)
            neg = tiny_models.conditioning(self.family, seed=10_000, reference=ref)
            latent = torch.zeros(tiny_models.latent_shape(self.family, height, width))
            out += [Job(f"cond {p}", pos, neg, latent, s) for s in seeds]
        return out


class CheckpointModel(BenchModel):
    """A user's diffusion-model checkpoint, conditioned with random text features of its width."""

    def __init__(self, path):
        import comfy.sd
        from demo.latent_space import LinearPatchVAE
        from fastdit.adapters import diffusion_model_of, for_model
        model = comfy.sd.load_diffusion_model(path)
        self.family = for_model(model, technique="The bench").family
        self.name = os.path.basename(path)
        dm = diffusion_model_of(model)
        self.context_dim = dm.txt_in.in_features
        vec = getattr(dm, "vector_in", None)
        self.pooled_dim = vec.in_layer.in_features if vec is not None else None
        super().__init__(model, LinearPatchVAE(latent_dims=2 if self.family == "flux" else 3))

    def _cond(self, seed):
        g = torch.Generator().manual_seed(seed)
        extras = {"pooled_output": torch.randn(1, self.pooled_dim, generator=g)} if self.pooled_dim else {}
        return [[torch.randn(1, 64, self.context_dim, generator=g), extras]]

    def jobs(self, n_prompts, seeds, height, width):
        fam = "flux" if self.family == "flux" else "qwen_image"
        latent = torch.zeros(tiny_models.latent_shape(fam, height, width))
        return [Job(f"cond {p}", self._cond(100 + p), self._cond(10_000), latent, s)
                for p in range(n_prompts) for s in seeds]


def load(spec):
    if spec.startswith("tiny-"):
        family = spec[len("tiny-"):]
        if family not in tiny_models.FAMILIES:
            raise ValueError(f"unknown tiny model {spec!r}; available: "
                             + ", ".join(f"tiny-{f}" for f in tiny_models.FAMILIES))
        return TinyModel(family)
    if spec in ("demo-flux", "demo-kontext", "demo-flux-open"):
        from demo import bench_models
        return bench_models.load(spec)
    if os.path.isfile(spec):
        from demo import bench_models
        if bench_models.is_demo_weights(spec):  # e.g. a training snapshot exported by demo.train
            return bench_models.load(spec)
        return CheckpointModel(spec)
    raise ValueError(f"unknown model {spec!r}: expected tiny-<family>, demo-flux, demo-kontext, demo-flux-open or a checkpoint path")
