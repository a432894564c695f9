"""The demo world: scenes of 1-3 coloured shapes on a flat or gradient background.

A prompt names every object (size, colour, shape, coarse position) and the background:

    "a small red circle at the top left, a large blue square at the center, on a white background"
    "a green triangle at the bottom right, on a gray to black vertical gradient"

`parse(prompt)` -> Scene, `scene.prompt()` -> the canonical prompt. `render(scenes, h, w)` draws
them exactly (analytic anti-aliasing; optional seeded jitter of position and size for training
data). `scene_accuracy` scores a generated image against its prompt: the fraction of objects whose
colour mask overlaps the rendered object with IoU >= 0.5, the analogue of a prompt-alignment score
for this world; `shape_accuracy` also requires the right shape, told apart by template matching
(IoU alone cannot tell a circle from a square of the same size). Edits ("make the circle
blue", "remove the square", "move the triangle left") turn a scene into another one, so the pixels an
edit must leave alone are known exactly.
"""
import dataclasses
import math
import re

import torch

# Object colours are saturated, background colours neutral, so colour masks are unambiguous.
COLORS = {
    "red": (0.90, 0.10, 0.10), "orange": (1.00, 0.55, 0.05), "yellow": (0.95, 0.88, 0.10),
    "green": (0.10, 0.72, 0.20), "cyan": (0.10, 0.80, 0.88), "blue": (0.15, 0.30, 0.95),
    "purple": (0.62, 0.18, 0.85),
}
BACKGROUND_COLORS = {
    "white": (0.96, 0.96, 0.96), "gray": (0.50, 0.50, 0.50), "black": (0.06, 0.06, 0.06),
    "beige": (0.90, 0.84, 0.70), "navy": (0.10, 0.12, 0.32),
}
SHAPES = ("circle", "square", "triangle", "diamond")
POSITIONS = {  # name -> (x, y) centre, as a fraction of width / height
    "top left": (1 / 6, 1 / 6), "top": (1 / 2, 1 / 6), "top right": (5 / 6, 1 / 6),
    "left": (1 / 6, 1 / 2), "center": (1 / 2, 1 / 2), "right": (5 / 6, 1 / 2),
    "bottom left": (1 / 6, 5 / 6), "bottom": (1 / 2, 5 / 6), "bottom right": (5 / 6, 5 / 6),
}
SIZES = {"small": 0.20, "medium": 0.27, "large": 0.34}  # diameter as a fraction of the shorter side
GRADIENTS = ("vertical", "horizontal")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MAX_OBJECTS = 3


@dataclasses.dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    position: str
    size: str = "medium"

    def phrase(self):
        return f"a {self.size} {self.color} {self.shape} at the {self.position}"


@dataclasses.dataclass(frozen=True)
class Background:
    color: str
    color2: str = None          # gradient end colour (None: flat)
    direction: str = "vertical"  # gradient direction: vertical = top to bottom

    def phrase(self):
        if self.color2 is None:
            return f"on a {self.color} background"
        return f"on a {self.color} to {self.color2} {self.direction} gradient"


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple
    background: Background

    def prompt(self):
        return ", ".join([o.phrase() for o in self.objects] + [self.background.phrase()])


@dataclasses.dataclass(frozen=True)
class Edit:
    """An instruction on a scene whose shapes are all different: recolor / remove / move. It may name
    the target's current colour as well ("make the red circle blue"), a cue that is easier to find in
    the source image than the shape alone."""
    action: str   # "recolor", "remove", "move"
    shape: str
    argument: str = None  # colour (recolor) or direction (move)
    color: str = None     # the target's colour in the source, when the instruction names it

    def target(self):
        return f"{self.color} {self.shape}" if self.color else self.shape

    def prompt(self):
        if self.action == "recolor":
            return f"make the {self.target()} {self.argument}"
        if self.action == "remove":
            return f"remove the {self.target()}"
        return f"move the {self.target()} {self.argument}"

    def apply(self, scene):
        objs = list(scene.objects)
        idx = [i for i, o in enumerate(objs) if o.shape == self.shape and self.color in (None, o.color)]
        if len(idx) != 1:
            raise ValueError(f"'{self.prompt()}' needs exactly one {self.target()} in the scene, found {len(idx)}")
        i = idx[0]
        if self.action == "recolor":
            objs[i] = dataclasses.replace(objs[i], color=self.argument)
        elif self.action == "remove":
            del objs[i]
        else:
            objs[i] = dataclasses.replace(objs[i], position=moved(objs[i].position, self.argument))
        return Scene(tuple(objs), scene.background)


def moved(position, direction):
    """The position one cell away in `direction`; ValueError at the border."""
    x, y = POSITIONS[position]
    dx, dy = DIRECTIONS[direction]
    col, row = round(x * 3 - 0.5) + dx, round(y * 3 - 0.5) + dy
    if not (0 <= col < 3 and 0 <= row < 3):
        raise ValueError(f"cannot move an object at the {position} {direction}")
    return next(n for n, (px, py) in POSITIONS.items() if (round(px * 3 - 0.5), round(py * 3 - 0.5)) == (col, row))


# ---------------------------------------------------------------------------------------------
# Prompt grammar
# ---------------------------------------------------------------------------------------------
def _vocabulary_help():
    return (f"colours {', '.join(COLORS)}; shapes {', '.join(SHAPES)}; sizes {', '.join(SIZES)}; "
            f"positions {', '.join(POSITIONS)}; backgrounds {', '.join(BACKGROUND_COLORS)} "
            f"(flat, or '<colour> to <colour> vertical|horizontal gradient')")


class PromptError(ValueError):
    pass


def _parse_object(text):
    words = [w for w in text.split() if w not in ("a", "an", "the", "at", "in")]
    size = next((w for w in words if w in SIZES), "medium")
    color = [w for w in words if w in COLORS]
    shape = [w for w in words if w in SHAPES]
    rest = " ".join(w for w in words if w not in SIZES and w not in COLORS and w not in SHAPES)
    if len(color) != 1 or len(shape) != 1 or rest not in POSITIONS:
        raise PromptError(f"cannot read the object {text.strip()!r}: expected '[size] <colour> <shape> at the "
                          f"<position>' with {_vocabulary_help()}")
    return Obj(shape[0], color[0], rest, size)


def _parse_background(text):
    words = [w for w in text.split() if w not in ("a", "an", "the", "on", "background")]
    m = re.fullmatch(r"(\w+) to (\w+)(?: (vertical|horizontal))? gradient", " ".join(words))
    if m:
        c1, c2, direction = m.group(1), m.group(2), m.group(3) or "vertical"
        if c1 in BACKGROUND_COLORS and c2 in BACKGROUND_COLORS and c1 != c2:
            return Background(c1, c2, direction)
    elif len(words) == 1 and words[0] in BACKGROUND_COLORS:
        return Background(words[0])
    raise PromptError(f"cannot read the background {text.strip()!r}: expected 'on a <colour> background' or "
                      f"'on a <colour> to <colour> vertical|horizontal gradient' with colours "
                      f"{', '.join(BACKGROUND_COLORS)}")


def parse(prompt):
    """Scene for a prompt of this world (case and extra spaces ignored); PromptError otherwise."""
    text = " ".join(prompt.lower().replace(";", ",").split())
    head, sep, bg = text.rpartition(" on ")
    if not sep:
        head, bg = text, "white background"
    parts = [p for p in re.split(r",| and ", head) if p.strip()]
    if not 1 <= len(parts) <= MAX_OBJECTS:
        raise PromptError(f"a prompt names 1 to {MAX_OBJECTS} objects separated by commas, got {len(parts)}: "
                          f"{prompt!r}")
    scene = Scene(tuple(_parse_object(p) for p in parts), _parse_background(bg))
    if len({o.position for o in scene.objects}) != len(scene.objects):
        raise PromptError(f"two objects share a position in {prompt!r}")
    return scene


def parse_edit(prompt):
    text = " ".join(prompt.lower().split())
    target = r"the (?:(\w+) )?(\w+)"  # [colour] shape
    for action, pattern, arguments in (("recolor", rf"make {target} (\w+)", COLORS), ("remove", rf"remove {target}", None),
                                       ("move", rf"move {target} (\w+)", DIRECTIONS)):
        m = re.fullmatch(pattern, text)
        if not m:
            continue
        color, shape, argument = m.group(1), m.group(2), (m.group(3) if arguments else None)
        if shape in SHAPES and color in (None, *COLORS) and (arguments is None or argument in arguments):
            return Edit(action, shape, argument, color)
    raise PromptError(f"cannot read the edit {prompt!r}: expected 'make the [colour] <shape> <colour>', 'remove the "
                      f"[colour] <shape>' or 'move the [colour] <shape> left|right|up|down' with shapes "
                      f"{', '.join(SHAPES)} and colours {', '.join(COLORS)}")


# ---------------------------------------------------------------------------------------------
# Random scenes and edits
# ---------------------------------------------------------------------------------------------
def _choice(gen, seq):
    seq = list(seq)
    return seq[int(torch.randint(len(seq), (1,), generator=gen))]


def _sample(gen, seq, k):
    seq = list(seq)
    return [seq[i] for i in torch.randperm(len(seq), generator=gen)[:k].tolist()]


def random_background(gen):
    if float(torch.rand(1, generator=gen)) < 0.5:
        return Background(_choice(gen, BACKGROUND_COLORS))
    c1, c2 = _sample(gen, BACKGROUND_COLORS, 2)
    return Background(c1, c2, _choice(gen, GRADIENTS))


def random_scene(gen, n_objects=None, unique_shapes=False):
    """A random scene: distinct positions and colours (and shapes if asked)."""
    n = n_objects or int(torch.randint(1, MAX_OBJECTS + 1, (1,), generator=gen))
    positions = _sample(gen, POSITIONS, n)
    colors = _sample(gen, COLORS, n)
    shapes = _sample(gen, SHAPES, n) if unique_shapes else [_choice(gen, SHAPES) for _ in range(n)]
    objs = tuple(Obj(s, c, p, _choice(gen, SIZES)) for s, c, p in zip(shapes, colors, positions))
    return Scene(objs, random_background(gen))


def random_edit(gen, scene, name_color=0.8):
    """A random valid edit of a scene with unique shapes (None if the scene allows none); with
    probability `name_color` the instruction also names the target's colour."""
    options = []
    used_colors = {o.color for o in scene.objects}
    used_positions = {o.position for o in scene.objects}
    for o in scene.objects:
        options += [Edit("recolor", o.shape, c) for c in COLORS if c not in used_colors]
        if len(scene.objects) > 1:
            options.append(Edit("remove", o.shape))
        for d in DIRECTIONS:
            try:
                if moved(o.position, d) not in used_positions:
                    options.append(Edit("move", o.shape, d))
            except ValueError:
                pass
    if not options:
        return None
    # the three kinds equally likely
    kinds = sorted({e.action for e in options})
    kind = _choice(gen, kinds)
    edit = _choice(gen, [e for e in options if e.action == kind])
    if float(torch.rand(1, generator=gen)) < name_color:
        edit = dataclasses.replace(edit, color=next(o.color for o in scene.objects if o.shape == edit.shape))
    return edit


def benchmark_prompts(n, seed=1234):
    """A fixed list of n prompts for the bench and the README grid."""
    gen = torch.Generator().manual_seed(seed)
    return [random_scene(gen).prompt() for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _sdf(shape, px, py, radius):
    """Signed distance (pixels) of pixel centres (px, py) relative to the shape's centre."""
    if shape == "circle":
        return torch.sqrt(px * px + py * py) - radius
    if shape == "square":
        h = radius * 0.886  # same area as the circle
        qx, qy = px.abs() - h, py.abs() - h
        return torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2) + torch.maximum(qx, qy).clamp(max=0)
    if shape == "diamond":
        return (px.abs() + py.abs() - radius * 1.253) / math.sqrt(2)
    if shape == "triangle":  # equilateral, pointing up, centroid at the centre
        r = radius * 1.347  # circumradius for the circle's area
        k = math.sqrt(3.0)
        x, y = px.abs(), -py  # y up
        edge1 = (k * x + y - r) / 2  # the two slanted sides
        return torch.maximum(edge1, -y - r / 2)  # and the base
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def _coverage(obj, h, w, dx=0.0, dy=0.0, ds=1.0):
    cx, cy = POSITIONS[obj.position]
    x = torch.arange(w, dtype=torch.float32) + 0.5
    y = torch.arange(h, dtype=torch.float32) + 0.5
    py, px = torch.meshgrid(y - (cy + dy) * h, x - (cx + dx) * w, indexing="ij")
    radius = SIZES[obj.size] * ds * min(h, w) / 2
    return (0.5 - _sdf(obj.shape, px, py, radius)).clamp(0, 1)  # analytic anti-aliasing


def background_image(bg, h, w):
    """The background alone, [h,w,3]."""
    c1 = torch.tensor(BACKGROUND_COLORS[bg.color])
    if bg.color2 is None:
        return c1.expand(h, w, 3).clone()
    c2 = torch.tensor(BACKGROUND_COLORS[bg.color2])
    n = h if bg.direction == "vertical" else w
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    ramp = (1 - t)[:, None] * c1 + t[:, None] * c2
    return (ramp[:, None, :].expand(h, w, 3) if bg.direction == "vertical" else ramp[None].expand(h, w, 3)).clone()


def draw_jitter(n, gen, jitter):
    """n (dx, dy, size factor) offsets from `gen`: positions move by up to `jitter` (fraction of
    the image), sizes by up to 4 * jitter relative."""
    out = []
    for _ in range(n):
        dx, dy = ((torch.rand(2, generator=gen) * 2 - 1) * jitter).tolist()
        out.append((dx, dy, 1 + float((torch.rand(1, generator=gen) * 2 - 1) * 4 * jitter)))
    return out


def render_layers(scene, h, w, gen=None, jitter=0.0, offsets=None):
    """(image [h,w,3], visible coverage of each object [n,h,w]) for one scene.

    Objects are exact unless jittered: by `offsets` (one (dx, dy, size factor) per object) or by
    offsets drawn from `gen` (see draw_jitter)."""
    if offsets is None:
        offsets = draw_jitter(len(scene.objects), gen, jitter) if gen is not None and jitter > 0 \
            else [(0.0, 0.0, 1.0)] * len(scene.objects)
    img = background_image(scene.background, h, w)
    covs = []
    for o, (dx, dy, ds) in zip(scene.objects, offsets):
        a = _coverage(o, h, w, dx, dy, ds)
        img = img * (1 - a[..., None]) + torch.tensor(COLORS[o.color]) * a[..., None]
        covs = [c * (1 - a) for c in covs] + [a]
    vis = torch.stack(covs) if covs else torch.zeros(0, h, w)
    return img, vis


def render(scenes, h, w, gen=None, jitter=0.0):
    """IMAGE [B,h,w,3] for a list of scenes (or one scene)."""
    if isinstance(scenes, Scene):
        scenes = [scenes]
    return torch.stack([render_layers(s, h, w, gen, jitter)[0] for s in scenes])


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------
IOU_THRESHOLD = 0.5
COLOR_TOLERANCE = 0.35  # RGB distance beyond which a pixel belongs to no palette colour


def color_masks(image, scene):
    """Boolean masks [n,h,w]: pixels of `image` [h,w,3] whose nearest colour is object i's colour.

    Candidates are every object colour of the palette and the scene's background colour at that
    pixel, so gradients and similar hues (orange / yellow) do not leak into each other."""
    h, w = image.shape[:2]
    palette = torch.tensor(list(COLORS.values()))  # [P,3]
    bg = background_image(scene.background, h, w)
    d_obj = torch.cdist(image.reshape(-1, 3).float(), palette).reshape(h, w, -1)  # [h,w,P]
    d_bg = (image.float() - bg).norm(dim=-1)
    nearest = d_obj.argmin(-1)
    best = d_obj.min(-1).values
    is_obj = (best < d_bg) & (best < COLOR_TOLERANCE)
    names = list(COLORS)
    return torch.stack([is_obj & (nearest == names.index(o.color)) for o in scene.objects]) if scene.objects \
        else torch.zeros(0, h, w, dtype=torch.bool)


def _iou(a, b):
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0


def object_ious(image, scene):
    """IoU of each object's colour mask in `image` [h,w,3] with the object as rendered."""
    h, w = image.shape[:2]
    _, vis = render_layers(scene, h, w)
    masks = color_masks(image, scene)
    return [_iou(m, v >= 0.5) for m, v in zip(masks, vis)]


def scene_accuracy(images, scenes):
    """Mean over images of the fraction of prompted objects found (colour-mask IoU >= 0.5)."""
    images, scenes = _batch(images, scenes)
    scores = [sum(iou >= IOU_THRESHOLD for iou in object_ious(img, s)) / len(s.objects)
              for img, s in zip(images, scenes)]
    return sum(scores) / len(scores)


def shape_of(mask, obj):
    """The shape whose template (prompted size, centred on the mask's centroid) best matches `mask`."""
    h, w = mask.shape
    if mask.sum() == 0:
        return None
    ys, xs = torch.nonzero(mask, as_tuple=True)
    cx, cy = POSITIONS[obj.position]
    dx, dy = (xs.float().mean().item() + 0.5) / w - cx, (ys.float().mean().item() + 0.5) / h - cy
    best = max(SHAPES, key=lambda s: _iou(mask, _coverage(dataclasses.replace(obj, shape=s), h, w, dx, dy) >= 0.5))
    return best


def shape_accuracy(images, scenes):
    """Mean over images of the fraction of objects found (as in scene_accuracy) AND drawn with the
    prompted shape: the template of that shape matches the colour mask best."""
    images, scenes = _batch(images, scenes)
    scores = []
    for img, s in zip(images, scenes):
        _, vis = render_layers(s, img.shape[0], img.shape[1])
        masks = color_masks(img, s)
        scores.append(sum(_iou(m, v >= 0.5) >= IOU_THRESHOLD and shape_of(m, o) == o.shape
                          for m, v, o in zip(masks, vis, s.objects)) / len(s.objects))
    return sum(scores) / len(scores)


def _batch(images, scenes):
    if images.ndim == 3:
        images = images[None]
    if isinstance(scenes, Scene):
        scenes = [scenes] * images.shape[0]
    if len(scenes) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(scenes)} scenes")
    return images, scenes


def unedited_mask(source, target, h, w):
    """MASK [h,w]: 1 where the renders of the source and target scenes are identical."""
    a = render(source, h, w)[0]
    b = render(target, h, w)[0]
    return ((a - b).abs().amax(-1) < 1e-6).float()
