"""The demo models as bench models (bench/models.py): prompts of the demo world, scored by scene
accuracy; demo-kontext edits also report the PSNR of the region the edit must leave alone;
demo-flux-open prompts of the open world, scored by scene accuracy on the prompted attributes and
by detail_db, the fine-band energy of the image against renders of its prompt (open_world.py)."""
import os

import torch

from bench.models import BenchModel, Job

from . import models, open_world, world

DEFAULT_CFG = 3.0  # the demo models are trained with 10% unconditional prompts and sampled with CFG
OPEN_REFERENCE_SEEDS = range(1000, 1008)  # renders of each open prompt that detail_db compares with


def _scorer(scene):
    def score(images):
        return {"scene_accuracy": world.scene_accuracy(images, scene),
                "shape_accuracy": world.shape_accuracy(images, scene)}
    return score


def _open_scorer(prompt, references):
    scene = open_world.parse(prompt)

    def score(images):
        return {"scene_accuracy": open_world.scene_accuracy(images, scene),
                "shape_accuracy": open_world.shape_accuracy(images, scene),
                "detail_db": open_world.detail_db(images, references)}
    return score


def edit_cases(n, seed=4321):
    """n (source scene, edit) pairs with unique shapes, reproducible."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        src = world.random_scene(gen, n_objects=int(torch.randint(2, 4, (1,), generator=gen)), unique_shapes=True)
        edit = world.random_edit(gen, src)
        if edit is not None:
            out.append((src, edit))
    return out


class DemoBenchModel(BenchModel):
    """A demo model (its shipped weights by `name`, or a loaded DemoModel) with the demo VAE."""
    default_cfg = DEFAULT_CFG

    def __init__(self, demo=None):
        self.demo = demo or models.cached(self.name)
        super().__init__(self.demo.patcher(), models.vae())


class DemoFlux(DemoBenchModel):
    name = "demo-flux"

    def jobs(self, n_prompts, seeds, height, width):
        negative = self.demo.conditioning("")
        out = []
        for prompt in world.benchmark_prompts(n_prompts):
            scene = world.parse(prompt)
            latent = torch.zeros(1, 16, height, width)
            out += [Job(prompt, self.demo.conditioning(prompt), negative, latent, s, score=_scorer(scene))
                    for s in seeds]
        return out


class DemoFluxOpen(DemoBenchModel):
    name = "demo-flux-open"

    def jobs(self, n_prompts, seeds, height, width):
        negative = self.demo.conditioning("")
        out = []
        for prompt in open_world.benchmark_prompts(n_prompts):
            refs = open_world.renders_of(prompt, 2 * height, 2 * width, OPEN_REFERENCE_SEEDS)
            latent = torch.zeros(1, 16, height, width)
            out += [Job(prompt, self.demo.conditioning(prompt), negative, latent, s, score=_open_scorer(prompt, refs))
                    for s in seeds]
        return out


class DemoKontext(DemoBenchModel):
    name = "demo-kontext"

    def jobs(self, n_prompts, seeds, height, width):
        out = []
        h, w = 2 * height, 2 * width
        for src, edit in edit_cases(n_prompts):
            target = edit.apply(src)
            pos, neg, source_img = edit_conditioning(self.demo, self.vae, src, edit, h, w)
            latent = torch.zeros(1, 16, height, width)
            mask = world.unedited_mask(src, target, h, w)[None]
            out += [Job(f"{src.prompt()} | {edit.prompt()}", pos, neg, latent, s, score=_scorer(target),
                        source=source_img, unedited_mask=mask) for s in seeds]
        return out


def edit_conditioning(demo, vae, src, edit, height, width):
    """(positive, negative, source image) of one edit of `src`: the instruction and the empty prompt,
    each with the source image (rendered at height x width pixels) as the reference latent."""
    source_img = world.render(src, height, width)
    ref = vae.encode(source_img)
    return (_with_reference(demo.conditioning(edit.prompt()), ref), _with_reference(demo.conditioning(""), ref),
            source_img)


def _with_reference(conditioning, latent):
    return [[c, {**extras, "reference_latents": [latent]}] for c, extras in conditioning]


def is_demo_weights(path):
    from safetensors import safe_open
    try:
        with safe_open(path, "pt") as f:
            return "config" in (f.metadata() or {})
    except Exception:
        return False


def load(name_or_path):
    """A bench model for demo-flux / demo-kontext / demo-flux-open or a demo weights file (task and
    world from its metadata)."""
    if name_or_path in models.WEIGHT_FILES:
        return {"demo-flux": DemoFlux, "demo-kontext": DemoKontext, "demo-flux-open": DemoFluxOpen}[name_or_path]()
    demo = models.load(name_or_path)
    bench_model = DemoFluxOpen(demo) if demo.metadata.get("world") == "open" else \
        DemoKontext(demo) if demo.metadata.get("task") == "kontext" else DemoFlux(demo)
    bench_model.name = os.path.basename(name_or_path)
    return bench_model
