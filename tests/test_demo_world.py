"""The demo world: prompt grammar, exact rendering, scene / shape accuracy, edits."""
import pytest
import torch

from demo import world as W


def _scene(prompt):
    return W.parse(prompt)


TWO = "a small red circle at the top left, a large blue square at the bottom right, on a white background"


def test_prompts_round_trip_and_tolerate_spelling_variants():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        s = W.random_scene(gen)
        assert W.parse(s.prompt()) == s
    s = W.parse("Red circle in the CENTER and a small green triangle at the top;  on a navy to beige horizontal gradient")
    assert s.objects == (W.Obj("circle", "red", "center", "medium"), W.Obj("triangle", "green", "top", "small"))
    assert s.background == W.Background("navy", "beige", "horizontal")


@pytest.mark.parametrize("prompt, message", [
    ("a pink circle at the top, on a white background", "colours red, orange"),
    ("a red circle at the middle, on a white background", "positions top left"),
    ("a red circle at the top, on a red background", "colours white, gray"),
    ("a red circle at the top, a blue square at the top, on a white background", "share a position"),
    ("a red circle at the top, a red circle at the left, a red circle at the right, a red circle at the center",
     "1 to 3 objects"),
])
def test_bad_prompts_name_the_vocabulary(prompt, message):
    with pytest.raises(W.PromptError, match=message):
        W.parse(prompt)


def test_render_is_exact_and_anti_aliased():
    img, vis = W.render_layers(_scene(TWO), 96, 96)
    red, blue, white = (torch.tensor(W.COLORS["red"]), torch.tensor(W.COLORS["blue"]),
                        torch.tensor(W.BACKGROUND_COLORS["white"]))
    assert torch.allclose(img[16, 16], red) and torch.allclose(img[80, 80], blue)
    assert torch.allclose(img[48, 48], white) and torch.allclose(img[0, 95], white)
    edge = vis[0][16]  # a row through the circle's centre: coverage ramps 0 -> 1 over about a pixel
    assert ((edge > 0.05) & (edge < 0.95)).sum() in (2, 4)
    # radius of a small circle: 0.2 * 96 / 2 = 9.6 px
    assert vis[0].sum().item() == pytest.approx(3.14159 * 9.6 ** 2, rel=0.01)


def test_gradient_background_and_seeded_jitter():
    s = _scene("a red circle at the center, on a black to white vertical gradient")
    img = W.render(s, 32, 32)[0]
    assert img[0, 0].mean() < 0.1 and img[-1, 0].mean() > 0.9 and torch.allclose(img[:, 0], img[:, 1])
    a = W.render(s, 32, 32, torch.Generator().manual_seed(1), jitter=0.03)
    b = W.render(s, 32, 32, torch.Generator().manual_seed(1), jitter=0.03)
    c = W.render(s, 32, 32, torch.Generator().manual_seed(2), jitter=0.03)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_scene_accuracy_on_known_images():
    s = _scene("a small red circle at the top left, a large blue square at the bottom right, "
               "a green triangle at the top right, on a gray to white vertical gradient")
    img = W.render(s, 64, 64)
    assert W.scene_accuracy(img, s) == 1.0 and W.shape_accuracy(img, s) == 1.0
    assert W.scene_accuracy(W.render(s, 16, 16), s) == 1.0  # holds at the smallest bench size too
    missing = W.Scene(s.objects[:2], s.background)
    assert W.scene_accuracy(W.render(missing, 64, 64), s) == pytest.approx(2 / 3)
    moved = W.Scene((W.Obj("circle", "red", "bottom left", "small"),) + s.objects[1:], s.background)
    assert W.scene_accuracy(W.render(moved, 64, 64), s) == pytest.approx(2 / 3)
    recoloured = W.Scene((W.Obj("circle", "orange", "top left", "small"),) + s.objects[1:], s.background)
    assert W.scene_accuracy(W.render(recoloured, 64, 64), s) == pytest.approx(2 / 3)
    assert W.scene_accuracy(torch.full((1, 64, 64, 3), 0.5), s) == 0.0
    # a batch is averaged per image
    assert W.scene_accuracy(torch.cat([img, W.render(missing, 64, 64)]), s) == pytest.approx(5 / 6)


def test_shape_accuracy_tells_shapes_apart_where_iou_cannot():
    s = _scene("a large red circle at the center, a large blue triangle at the top left, on a white background")
    swapped = W.Scene((W.Obj("square", "red", "center", "large"), W.Obj("diamond", "blue", "top left", "large")),
                      s.background)
    img = W.render(swapped, 64, 64)
    assert W.scene_accuracy(img, s) == 1.0   # same colours, places and sizes: IoU >= 0.5
    assert W.shape_accuracy(img, s) == 0.0   # but the template match sees the wrong shapes


def test_edits_apply_and_know_the_unedited_pixels():
    s = _scene(TWO)
    assert W.parse_edit("make the circle green").apply(s).objects[0].color == "green"
    assert W.parse_edit("remove the square").apply(s).objects == s.objects[:1]
    assert W.parse_edit("move the circle right").apply(s).objects[0].position == "top"
    with pytest.raises(ValueError, match="cannot move an object at the top left up"):
        W.parse_edit("move the circle up").apply(s)
    with pytest.raises(W.PromptError, match=r"make the \[colour\] <shape> <colour>"):
        W.parse_edit("paint the circle")
    colour = s.objects[0].color
    named = W.parse_edit(f"make the {colour} circle green")
    assert named.color == colour and named.apply(s) == W.parse_edit("make the circle green").apply(s)
    assert W.parse_edit(f"remove the {colour} circle").apply(s).objects == s.objects[1:]
    other = next(c for c in W.COLORS if c != colour)
    with pytest.raises(ValueError, match=f"needs exactly one {other} circle"):
        W.parse_edit(f"move the {other} circle right").apply(s)
    with pytest.raises(W.PromptError):
        W.parse_edit("make the big circle green")  # not a colour
    edit = W.parse_edit("make the circle green")
    mask = W.unedited_mask(s, edit.apply(s), 64, 64)
    _, vis = W.render_layers(s, 64, 64)
    assert mask[vis[0] > 0].sum() == 0 and mask[vis[1] > 0.99].all() and mask[40, 5] == 1
    gen = torch.Generator().manual_seed(3)
    named = 0
    for _ in range(40):
        src = W.random_scene(gen, unique_shapes=True)
        e = W.random_edit(gen, src)
        assert e is None or W.parse_edit(e.prompt()) == e and e.apply(src) != src
        named += e is not None and e.color is not None
    assert 20 <= named < 40  # most random edits name the target's colour, not all


def test_shape_accuracy_needs_the_object_to_be_found():
    s = _scene("a large red circle at the center, on a white background")
    noise = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    assert W.scene_accuracy(noise, s) == 0.0 and W.shape_accuracy(noise, s) == 0.0
