"""The open demo world: prompts that leave most of the image open, textures that carry fine detail.

On the demo world (world.py) a prompt fixes every attribute, so each prompt has one image and sampling
paths are nearly straight. Here a prompt may leave any attribute of an object unsaid (shape, colour,
place, size, fill), the number of objects ("some shapes") and the background (colour, texture), and
every fill and background is a procedural texture (stripes, checks, dots, mottled blobs) with random
period, orientation, phase and colour pair. The renderer draws what the prompt leaves open from the
seed, so one prompt has many correct images:

    "a large striped red circle at the top left, a blue shape, on a checkered background"
    "a small green triangle, a square at the bottom"
    "some shapes on a beige background"

`parse(prompt)` -> OpenScene, `realize(scene, gen)` -> Drawing (everything decided),
`render_drawing(drawing, h, w)` -> image, `render(scenes, h, w, gen)` does both.

Scores (see docs/DEMO_MODELS.md):
  * `scene_accuracy`: the prompted attributes only. Objects are found by hue (object colours are
    saturated, backgrounds neutral, fills darken the object colour, which keeps its hue); each
    prompted object must be matched to a distinct found object with its colour, 3x3 cell and size
    class where prompted, and when the prompt lists its objects, extra objects count against it.
  * `shape_accuracy`: as scene_accuracy, also requiring the prompted shape (template match).
  * `band_energies` / `detail_db`: the energy of the image in four spatial-frequency bands against
    renders of the same prompts: a blurred or averaged image loses the fine bands, a noisy one gains.
"""
import dataclasses
import itertools
import math
import re

import torch

from . import world

COLORS = world.COLORS
BACKGROUND_COLORS = world.BACKGROUND_COLORS
SHAPES = world.SHAPES
POSITIONS = world.POSITIONS
SIZES = world.SIZES
TEXTURES = ("plain", "striped", "checkered", "dotted", "mottled")  # object fills and backgrounds
MAX_OBJECTS = 3
JITTER = 0.05        # position offset (fraction of the image) of a realised object
SIZE_JITTER = 0.06   # relative diameter jitter (size classes stay apart: 0.20 / 0.27 / 0.34)


@dataclasses.dataclass(frozen=True)
class OpenObj:
    """An object as prompted: None = left open."""
    shape: str = None
    color: str = None
    position: str = None
    size: str = None
    fill: str = None

    def phrase(self):
        words = ["a"] + [w for w in (self.size, self.fill, self.color) if w] + [self.shape or "shape"]
        return " ".join(words) + (f" at the {self.position}" if self.position else "")


@dataclasses.dataclass(frozen=True)
class OpenBackground:
    color: str = None
    texture: str = None

    def phrase(self):
        words = [w for w in (self.color, self.texture) if w]
        return f"on a {' '.join(words)} background" if words else ""


@dataclasses.dataclass(frozen=True)
class OpenScene:
    objects: tuple = None   # None: the number of objects (and everything about them) is open
    background: OpenBackground = OpenBackground()

    def prompt(self):
        head = "some shapes" if self.objects is None else ", ".join(o.phrase() for o in self.objects)
        bg = self.background.phrase()
        return f"{head}, {bg}" if bg else head


# ---------------------------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------------------------
class PromptError(world.PromptError):
    pass


def _help():
    return (f"'a [size] [fill] [colour] <shape|shape> [at the <position>]' objects separated by commas, or "
            f"'some shapes'; then optionally 'on a [colour] [texture] background'. Sizes {', '.join(SIZES)}; "
            f"fills/textures {', '.join(TEXTURES)}; colours {', '.join(COLORS)}; shapes {', '.join(SHAPES)}; "
            f"positions {', '.join(POSITIONS)}; background colours {', '.join(BACKGROUND_COLORS)}")


def _one(words, vocab, text):
    found = [w for w in words if w in vocab]
    if len(found) > 1:
        raise PromptError(f"{text.strip()!r} names {' and '.join(found)}: at most one")
    return found[0] if found else None


def _parse_object(text):
    words = [w for w in text.split() if w not in ("a", "an", "the", "at", "in", "one")]
    size, fill = _one(words, SIZES, text), _one(words, TEXTURES, text)
    color, shape = _one(words, COLORS, text), _one(words, SHAPES, text)
    noun = [w for w in words if w == "shape"]
    rest = " ".join(w for w in words if w not in SIZES and w not in TEXTURES and w not in COLORS
                    and w not in SHAPES and w != "shape")
    if (shape is None) == (not noun) or len(noun) > 1 or (rest and rest not in POSITIONS):
        raise PromptError(f"cannot read the object {text.strip()!r}: expected {_help()}")
    return OpenObj(shape, color, rest or None, size, fill)


def _parse_background(text):
    words = [w for w in text.split() if w not in ("a", "an", "the", "on")]
    if not words or words[-1] != "background":
        raise PromptError(f"cannot read the background {text.strip()!r}: expected {_help()}")
    words = words[:-1]
    color, texture = _one(words, BACKGROUND_COLORS, text), _one(words, TEXTURES, text)
    if len(words) != (color is not None) + (texture is not None):
        raise PromptError(f"cannot read the background {text.strip()!r}: expected {_help()}")
    return OpenBackground(color, texture)


def parse(prompt):
    """OpenScene for a prompt of the open world (case and extra spaces ignored); PromptError otherwise."""
    text = " ".join(prompt.lower().replace(";", ",").split())
    head, sep, bg = text.rpartition(" on ")
    if not sep:
        head, bg = text, ""
    head = head.strip(" ,")
    background = _parse_background(bg) if bg else OpenBackground()
    if head in ("some shapes", "shapes"):
        return OpenScene(None, background)
    parts = [p for p in re.split(r",| and ", head) if p.strip()]
    if not 1 <= len(parts) <= MAX_OBJECTS:
        raise PromptError(f"a prompt names 1 to {MAX_OBJECTS} objects separated by commas, or 'some shapes', "
                          f"got {len(parts)}: {prompt!r}")
    objs = tuple(_parse_object(p) for p in parts)
    for attr in ("position", "color"):
        named = [getattr(o, attr) for o in objs if getattr(o, attr)]
        if len(set(named)) != len(named):
            raise PromptError(f"two objects share a {attr.replace('color', 'colour')} in {prompt!r}")
    return OpenScene(objs, background)


# ---------------------------------------------------------------------------------------------
# Random prompts
# ---------------------------------------------------------------------------------------------
_choice, _sample = world._choice, world._sample


def _rand(gen):
    return float(torch.rand(1, generator=gen))


# probability that a prompt says each attribute
SAY = {"color": 0.65, "shape": 0.5, "position": 0.55, "size": 0.4, "fill": 0.3, "bg_color": 0.5, "bg_texture": 0.4}
COUNT_OPEN = 0.12  # share of "some shapes" prompts


def random_prompt_scene(gen):
    """A random OpenScene: each attribute said with probability SAY (distinct colours and places)."""
    bg = OpenBackground(_choice(gen, BACKGROUND_COLORS) if _rand(gen) < SAY["bg_color"] else None,
                        _choice(gen, TEXTURES) if _rand(gen) < SAY["bg_texture"] else None)
    if _rand(gen) < COUNT_OPEN:
        return OpenScene(None, bg)
    n = int(torch.randint(1, MAX_OBJECTS + 1, (1,), generator=gen))
    colors, positions = _sample(gen, COLORS, n), _sample(gen, POSITIONS, n)
    objs = []
    for i in range(n):
        objs.append(OpenObj(_choice(gen, SHAPES) if _rand(gen) < SAY["shape"] else None,
                            colors[i] if _rand(gen) < SAY["color"] else None,
                            positions[i] if _rand(gen) < SAY["position"] else None,
                            _choice(gen, SIZES) if _rand(gen) < SAY["size"] else None,
                            _choice(gen, TEXTURES) if _rand(gen) < SAY["fill"] else None))
    return OpenScene(tuple(objs), bg)


def benchmark_prompts(n, seed=2468):
    """A fixed list of n open prompts for the bench and the evaluation."""
    gen = torch.Generator().manual_seed(seed)
    return [random_prompt_scene(gen).prompt() for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Realisation: everything the prompt leaves open, drawn from the seed
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Texture:
    kind: str
    period: float      # fraction of the shorter side
    angle: float       # radians
    phase: tuple       # (u, v) in periods
    seed: int          # mottled blobs
    contrast: float    # 0..1: how far the second colour is from the first


@dataclasses.dataclass(frozen=True)
class Drawn:
    obj: world.Obj     # shape, colour, cell, size class
    offset: tuple      # (dx, dy, size factor)
    fill: Texture


@dataclasses.dataclass(frozen=True)
class Drawing:
    objects: tuple
    bg_color: str
    bg_color2: str
    bg_texture: Texture


def _distance(a, b):
    return math.dist(BACKGROUND_COLORS[a], BACKGROUND_COLORS[b])


# the second colour of a background texture: a neutral far enough from the first to be seen
BACKGROUND_PARTNERS = {a: [b for b in BACKGROUND_COLORS if _distance(a, b) >= 0.4] for a in BACKGROUND_COLORS}
BACKGROUND_STEP = (0.3, 0.5)  # RGB distance from the first colour to the texture's second colour


def _texture(gen, kind, lo, hi):
    period = math.exp(math.log(lo) + _rand(gen) * (math.log(hi) - math.log(lo)))
    return Texture(kind, period, _rand(gen) * math.pi, (_rand(gen), _rand(gen)),
                   int(torch.randint(2 ** 31, (1,), generator=gen)), 0.45 + 0.55 * _rand(gen))


def realize(scene, gen):
    """A Drawing of an OpenScene: what the prompt leaves open is drawn from `gen`."""
    if scene.objects is None:
        objs = tuple(OpenObj() for _ in range(int(torch.randint(1, MAX_OBJECTS + 1, (1,), generator=gen))))
    else:
        objs = scene.objects
    free_pos = [p for p in _sample(gen, POSITIONS, len(POSITIONS)) if p not in {o.position for o in objs}]
    free_col = [c for c in _sample(gen, COLORS, len(COLORS)) if c not in {o.color for o in objs}]
    drawn = []
    for o in objs:
        shape = o.shape or _choice(gen, SHAPES)
        color = o.color or free_col.pop()
        position = o.position or free_pos.pop()
        size = o.size or _choice(gen, SIZES)
        fill = _texture(gen, o.fill or _choice(gen, TEXTURES), 1 / 16, 1 / 7)
        dx, dy = ((torch.rand(2, generator=gen) * 2 - 1) * JITTER).tolist()
        ds = 1 + (_rand(gen) * 2 - 1) * SIZE_JITTER
        drawn.append(Drawn(world.Obj(shape, color, position, size), (dx, dy, ds), fill))
    bg = scene.background
    c1 = bg.color or _choice(gen, BACKGROUND_COLORS)
    c2 = _choice(gen, BACKGROUND_PARTNERS[c1])
    return Drawing(tuple(drawn), c1, c2, _texture(gen, bg.texture or _choice(gen, TEXTURES), 1 / 14, 1 / 4))


def pattern(tex, h, w):
    """Texture coverage [h,w] in [0,1], anti-aliased (about one pixel of transition)."""
    if tex.kind == "plain":
        return torch.zeros(h, w)
    side = min(h, w)
    period = max(tex.period * side, 3.0)  # pixels; at least 3 so the pattern is not aliased away
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                          indexing="ij")
    ca, sa = math.cos(tex.angle), math.sin(tex.angle)
    u = (x * ca + y * sa) / period + tex.phase[0]
    v = (-x * sa + y * ca) / period + tex.phase[1]
    if tex.kind == "striped":  # signed distance (pixels) to the nearest stripe edge
        d = (0.25 - ((u % 1) - 0.5).abs()) * period
    elif tex.kind == "checkered":
        du, dv = (0.25 - ((u % 1) - 0.5).abs()), (0.25 - ((v % 1) - 0.5).abs())
        d = torch.sign(du * dv) * torch.minimum(du.abs(), dv.abs()) * period
    elif tex.kind == "dotted":
        dist = torch.sqrt(((u % 1) - 0.5) ** 2 + ((v % 1) - 0.5) ** 2)
        d = (0.28 - dist) * period
    elif tex.kind == "mottled":  # thresholded smooth noise: blobs about a period across
        g = torch.Generator().manual_seed(tex.seed)
        cells = max(2, int(math.ceil(side / period)) + 2)
        noise = torch.randn(1, 1, cells, cells, generator=g)
        n = torch.nn.functional.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)[0, 0]
        gy, gx = torch.gradient(n)
        d = n / (torch.sqrt(gx ** 2 + gy ** 2) + 1e-3)  # first-order distance to the zero level
    else:
        raise ValueError(f"unknown texture {tex.kind!r}; known: {', '.join(TEXTURES)}")
    return (0.5 + d).clamp(0, 1)


def background(drawing, h, w):
    c1 = torch.tensor(BACKGROUND_COLORS[drawing.bg_color])
    c2 = torch.tensor(BACKGROUND_COLORS[drawing.bg_color2])
    lo, hi = BACKGROUND_STEP
    step = lo + (hi - lo) * (drawing.bg_texture.contrast - 0.45) / 0.55
    c2 = c1 + (c2 - c1) * step / float((c2 - c1).norm())
    p = pattern(drawing.bg_texture, h, w)[..., None]
    return c1 * (1 - p) + c2 * p


FILL_DEPTH = 0.42  # a fill darkens the object colour by up to this share (the hue is kept)


def render_drawing(drawing, h, w):
    """(image [h,w,3], visible coverage of each object [n,h,w])."""
    img = background(drawing, h, w)
    covs = []
    for d in drawing.objects:
        dx, dy, ds = d.offset
        a = world._coverage(d.obj, h, w, dx, dy, ds)
        fill = torch.tensor(COLORS[d.obj.color]) * (1 - FILL_DEPTH * d.fill.contrast * pattern(d.fill, h, w)[..., None])
        img = img * (1 - a[..., None]) + fill * a[..., None]
        covs = [c * (1 - a) for c in covs] + [a]
    return img, (torch.stack(covs) if covs else torch.zeros(0, h, w))


def render(scenes, h, w, gen):
    """IMAGE [B,h,w,3]: one realisation of each OpenScene (or prompt), drawn from `gen`."""
    if isinstance(scenes, (OpenScene, str)):
        scenes = [scenes]
    scenes = [parse(s) if isinstance(s, str) else s for s in scenes]
    return torch.stack([render_drawing(realize(s, gen), h, w)[0] for s in scenes])


def renders_of(prompt, h, w, seeds):
    """IMAGE [len(seeds),h,w,3]: the prompt realised once per seed."""
    scene = parse(prompt)
    return torch.stack([render_drawing(realize(scene, torch.Generator().manual_seed(s)), h, w)[0] for s in seeds])


# ---------------------------------------------------------------------------------------------
# Scene accuracy on the prompted attributes
# ---------------------------------------------------------------------------------------------
SATURATION = 0.28      # max - min of RGB: objects above (darkest fill of green: 0.34), backgrounds below (0.22)
MIN_AREA = 0.25        # a found object covers at least this share of a small object's area


def _hue(rgb):
    r, g, b = rgb.unbind(-1)
    return torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)  # radians, -pi..pi


_PALETTE_HUES = _hue(torch.tensor(list(COLORS.values())))


def color_masks(image):
    """{colour: boolean mask [h,w]} of the object colours present in `image` [h,w,3] (by hue)."""
    img = image.float()
    sat = img.amax(-1) - img.amin(-1)
    hue = _hue(img)
    diff = (hue[..., None] - _PALETTE_HUES).abs()
    diff = torch.minimum(diff, 2 * math.pi - diff)
    nearest = diff.argmin(-1)
    is_obj = sat > SATURATION
    h, w = image.shape[:2]
    small = math.pi * (SIZES["small"] * min(h, w) / 2) ** 2
    out = {}
    for i, name in enumerate(COLORS):
        m = is_obj & (nearest == i)
        if m.sum().item() >= MIN_AREA * small:
            out[name] = m
    return out


def _size_class(area, position, h, w):
    """The size whose template (any shape at the centre of this cell, clipped by the image) has the
    area nearest to `area` on a log scale (shapes have equal areas unless the border clips them,
    and a clipped shape is the one most often mistaken for another)."""
    target = math.log(max(area, 1.0))
    err = {s: min(abs(math.log(max(world._coverage(world.Obj(shape, "red", position, s), h, w).sum().item(), 1.0))
                      - target) for shape in SHAPES) for s in SIZES}
    return min(err, key=err.get)


def _cell(mask):
    h, w = mask.shape
    ys, xs = torch.nonzero(mask, as_tuple=True)
    cx, cy = (xs.float().mean().item() + 0.5) / w, (ys.float().mean().item() + 0.5) / h
    col, row = min(2, int(cx * 3)), min(2, int(cy * 3))
    return next(n for n, (px, py) in POSITIONS.items() if (round(px * 3 - 0.5), round(py * 3 - 0.5)) == (col, row))


def found_objects(image):
    """The objects found in `image` [h,w,3]: [(mask, world.Obj(shape, colour, cell, size class))]."""
    h, w = image.shape[:2]
    out = []
    for color, m in color_masks(image).items():
        area, cell = m.sum().item(), _cell(m)
        obj = world.Obj("circle", color, cell, _size_class(area, cell, h, w))
        out.append((m, dataclasses.replace(obj, shape=world.shape_of(m, obj))))
    return out


def _matches(prompted, found, with_shape):
    return all(getattr(prompted, a) in (None, getattr(found, a))
               for a in ("color", "position", "size") + (("shape",) if with_shape else ()))


def image_accuracy(image, scene, with_shape=False):
    """Share of the prompt's objects found with their prompted attributes (see module docstring)."""
    found = [o for _, o in found_objects(image)]
    if scene.objects is None:  # only "some shapes" was said
        return float(1 <= len(found) <= MAX_OBJECTS)
    p = list(scene.objects)
    best = 0
    for perm in itertools.permutations(range(len(found)), min(len(p), len(found))):
        best = max(best, sum(_matches(p[i], found[j], with_shape) for i, j in enumerate(perm)))
    return best / max(len(p), len(found))


def _batch(images, scenes):
    if images.ndim == 3:
        images = images[None]
    if isinstance(scenes, (OpenScene, str)):
        scenes = [scenes] * images.shape[0]
    scenes = [parse(s) if isinstance(s, str) else s for s in scenes]
    if len(scenes) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(scenes)} scenes")
    return images, scenes


def scene_accuracy(images, scenes):
    """Mean over images of image_accuracy (colour, cell, size and count where prompted)."""
    images, scenes = _batch(images, scenes)
    return sum(image_accuracy(i, s) for i, s in zip(images, scenes)) / len(scenes)


def shape_accuracy(images, scenes):
    """As scene_accuracy, also requiring the prompted shapes."""
    images, scenes = _batch(images, scenes)
    return sum(image_accuracy(i, s, with_shape=True) for i, s in zip(images, scenes)) / len(scenes)


# ---------------------------------------------------------------------------------------------
# Realism: detail per spatial-frequency band against renders of the world
# ---------------------------------------------------------------------------------------------
BAND_SIGMAS = (0.0, 1.0, 2.0, 4.0, 8.0)  # band k = blur(sigma_k) - blur(sigma_k+1), k = 0..3 (0: finest)
DETAIL_BANDS = 3                          # detail_db averages the three finest bands


def gaussian_blur(images, sigma):
    """IMAGE [B,h,w,C] blurred with a Gaussian of `sigma` pixels (edge pixels repeated); sigma 0: unchanged."""
    if sigma <= 0:
        return images.float()
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    x = images.float().permute(0, 3, 1, 2)
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x.permute(0, 2, 3, 1)


def band_energies(images):
    """[B, 4]: mean squared band-pass signal per image (all colour channels), finest band first."""
    levels = [gaussian_blur(images, s) for s in BAND_SIGMAS]
    return torch.stack([(a - b).pow(2).flatten(1).mean(1) for a, b in zip(levels, levels[1:])], dim=1)


def band_db(images, references):
    """[4]: per band, the images' mean of 10 log10(energy) minus the references' (0: the world's detail;
    negative: missing detail, as after a blur or an average; positive: excess, such as noise)."""
    e = 10 * torch.log10(band_energies(images).clamp_min(1e-12)).mean(0)
    r = 10 * torch.log10(band_energies(references).clamp_min(1e-12)).mean(0)
    return e - r


def detail_db(images, references):
    """The mean of band_db over the DETAIL_BANDS finest bands (signed, dB)."""
    return float(band_db(images, references)[:DETAIL_BANDS].mean())


def detail_error_db(images, references):
    """The mean |band_db| over the DETAIL_BANDS finest bands: 0 for images with the world's detail."""
    return float(band_db(images, references)[:DETAIL_BANDS].abs().mean())
