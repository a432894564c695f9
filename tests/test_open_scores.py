"""Scores of the open world on known inputs: a blur, an average of two renders, a wrong colour,
size, place or count each lower them clearly; renders of the world score full."""
import dataclasses

import pytest
import torch

from demo import open_world

N = 32


@pytest.fixture(scope="module")
def renders():
    prompts = open_world.benchmark_prompts(N)
    drawings = [open_world.realize(open_world.parse(p), torch.Generator().manual_seed(11)) for p in prompts]
    images = torch.stack([open_world.render_drawing(d, 64, 64)[0] for d in drawings])
    others = torch.cat([open_world.renders_of(p, 64, 64, [12]) for p in prompts])
    refs = torch.cat([open_world.renders_of(p, 64, 64, range(100, 104)) for p in prompts])
    return prompts, drawings, images, others, refs


def test_renders_have_the_worlds_detail(renders):
    prompts, _, images, others, refs = renders
    assert abs(open_world.detail_db(images, refs)) < 0.6
    assert abs(open_world.detail_db(others, refs)) < 0.6
    assert open_world.detail_error_db(images, refs) < 0.6


def test_a_one_pixel_blur_loses_detail(renders):
    prompts, _, images, _, refs = renders
    blurred = open_world.gaussian_blur(images, 1.0)
    bands = open_world.band_db(blurred, refs)
    assert bands[0] < -6.0 and bands[1] < -2.0  # measured -8.0 and -3.2 dB on 48 prompts
    assert open_world.detail_db(blurred, refs) < open_world.detail_db(images, refs) - 3.0
    half = open_world.gaussian_blur(images, 0.5)
    assert open_world.detail_db(blurred, refs) < open_world.detail_db(half, refs) < open_world.detail_db(images, refs) - 0.8
    # a blur keeps the layout: scene accuracy does not catch it, the detail score does
    assert open_world.scene_accuracy(blurred, prompts) >= 0.9


def test_an_average_of_two_renders_loses_detail_and_accuracy(renders):
    prompts, _, images, others, refs = renders
    avg = (images + others) / 2
    assert open_world.detail_db(avg, refs) < open_world.detail_db(images, refs) - 1.5  # measured -2.5 dB
    assert open_world.scene_accuracy(images, prompts) >= 0.95
    assert open_world.scene_accuracy(avg, prompts) < open_world.scene_accuracy(images, prompts) - 0.1  # 0.81 vs 1.0


def test_noise_adds_fine_detail():
    prompts = open_world.benchmark_prompts(16)
    images = open_world.render(prompts, 64, 64, torch.Generator().manual_seed(1))
    refs = torch.cat([open_world.renders_of(p, 64, 64, range(4)) for p in prompts])
    noisy = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert open_world.band_db(noisy, refs)[0] > open_world.band_db(images, refs)[0] + 1.5


def _changed(drawing, i, **attrs):
    objs = list(drawing.objects)
    objs[i] = dataclasses.replace(objs[i], obj=dataclasses.replace(objs[i].obj, **attrs))
    return dataclasses.replace(drawing, objects=tuple(objs))


def _said(prompts, attr):
    """(prompt index, object index) of objects whose `attr` the prompt says."""
    out = []
    for k, p in enumerate(prompts):
        s = open_world.parse(p)
        out += [(k, i) for i, o in enumerate(s.objects or ()) if getattr(o, attr)]
    return out


def test_a_wrong_colour_size_or_place_fails_the_object(renders):
    prompts, drawings, _, _, _ = renders
    palette = list(open_world.COLORS)
    cells = list(open_world.POSITIONS)
    for attr in ("color", "size", "position"):
        cases = _said(prompts, attr)
        assert len(cases) >= 4
        right, wrong = [], []
        for k, i in cases:
            d = drawings[k]
            if attr == "size":  # the class farthest from the drawn one
                new = "small" if d.objects[i].obj.size == "large" else "large"
            else:  # a colour / cell no object of the drawing has
                used = {getattr(x.obj, attr) for x in d.objects}
                new = next(v for v in (palette if attr == "color" else cells) if v not in used)
            right.append(open_world.image_accuracy(open_world.render_drawing(d, 64, 64)[0], open_world.parse(prompts[k])))
            img = open_world.render_drawing(_changed(d, i, **{attr: new}), 64, 64)[0]
            wrong.append(open_world.image_accuracy(img, open_world.parse(prompts[k])))
        n = len(cases)
        assert sum(right) / n >= 0.9, attr
        # one of the prompt's 1-3 objects is wrong: each such image loses a third to all of its score
        assert sum(wrong) / n <= sum(right) / n - 0.3, (attr, sum(wrong) / n)


def test_a_wrong_count_fails():
    prompt = "a red circle at the top left, a blue square at the bottom right"
    d = open_world.realize(open_world.parse(prompt), torch.Generator().manual_seed(0))
    assert open_world.scene_accuracy(open_world.render_drawing(d, 64, 64)[0], prompt) == 1.0
    extra = open_world.realize(open_world.parse(prompt + ", a green triangle at the center"),
                               torch.Generator().manual_seed(0))
    assert open_world.scene_accuracy(open_world.render_drawing(extra, 64, 64)[0], prompt) == pytest.approx(2 / 3)
    fewer = dataclasses.replace(d, objects=d.objects[:1])
    assert open_world.scene_accuracy(open_world.render_drawing(fewer, 64, 64)[0], prompt) == 0.5
    empty = dataclasses.replace(d, objects=())
    assert open_world.scene_accuracy(open_world.render_drawing(empty, 64, 64)[0], "some shapes") == 0.0
