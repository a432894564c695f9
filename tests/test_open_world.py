"""The open demo world: grammar, what a prompt fixes and what the seed draws, its text encoder."""
import dataclasses

import pytest
import torch

from demo import open_text, open_world, text
from fastdit import metrics


def test_prompts_round_trip_and_bad_prompts_are_refused():
    for p in open_world.benchmark_prompts(40):
        assert open_world.parse(p).prompt() == p
    s = open_world.parse("A large striped red circle at the top left, a blue shape,  on a checkered background")
    assert s.objects[0] == open_world.OpenObj("circle", "red", "top left", "large", "striped")
    assert s.objects[1] == open_world.OpenObj(None, "blue") and s.background == open_world.OpenBackground(None, "checkered")
    assert open_world.parse("some shapes").objects is None
    assert open_world.parse("a shape on a navy background").background.color == "navy"
    for bad, match in (("a red circle, a red square", "share a colour"), ("a red blob", "cannot read the object"),
                       ("a circle at the top, a square at the top", "share a position"),
                       ("a circle on a pink background", "cannot read the background"),
                       ("a red blue circle", "at most one")):
        with pytest.raises(open_world.PromptError, match=match):
            open_world.parse(bad)


def test_the_seed_draws_what_the_prompt_leaves_open():
    scene = open_world.parse("a large striped red circle at the top left, a shape, on a beige dotted background")
    first, second = [], []
    for seed in range(24):
        d = open_world.realize(scene, torch.Generator().manual_seed(seed))
        a, b = d.objects
        assert (a.obj.shape, a.obj.color, a.obj.position, a.obj.size, a.fill.kind) == \
            ("circle", "red", "top left", "large", "striped")
        assert d.bg_color == "beige" and d.bg_texture.kind == "dotted"
        assert b.obj.color != "red" and b.obj.position != "top left"
        first.append(a.fill.period)
        second.append((b.obj.shape, b.obj.color, b.obj.position, b.obj.size, b.fill.kind))
    assert len(set(first)) == 24  # the fill's period is drawn even when its kind is said
    for i, least in enumerate((4, 5, 6, 3, 5)):  # shapes, colours, places, sizes, fills of the open object
        assert len({s[i] for s in second}) >= least
    counts = {len(open_world.realize(open_world.parse("some shapes"), torch.Generator().manual_seed(s)).objects)
              for s in range(24)}
    assert counts == {1, 2, 3}


def test_two_seeds_of_one_prompt_are_far_apart_and_renders_score_full():
    prompts = open_world.benchmark_prompts(32)
    a = torch.cat([open_world.renders_of(p, 64, 64, [1]) for p in prompts])
    b = torch.cat([open_world.renders_of(p, 64, 64, [2]) for p in prompts])
    assert metrics.pooled_psnr(metrics.psnr(a, b)) < 14.0  # measured 9.9 dB (demo-flux world: 28 dB)
    # even a prompt that says every attribute of its objects has many images
    full = "a large striped red circle at the top left, a small blue square at the bottom, on a gray striped background"
    r = open_world.renders_of(full, 64, 64, [1, 2])
    assert metrics.pooled_psnr(metrics.psnr(r[:1], r[1:])) < 20.0
    assert open_world.scene_accuracy(a, prompts) >= 0.95 and open_world.scene_accuracy(b, prompts) >= 0.95


def test_textures_are_anti_aliased_and_in_range():
    for kind in open_world.TEXTURES:
        tex = open_world.Texture(kind, 0.2, 0.3, (0.2, 0.7), 5, 1.0)
        p = open_world.pattern(tex, 64, 64)
        assert p.shape == (64, 64) and 0 <= float(p.min()) and float(p.max()) <= 1
        if kind != "plain":
            assert 0.2 < float(p.mean()) < 0.8  # both colours show
            assert ((p > 0.02) & (p < 0.98)).float().mean() < 0.35  # mostly one colour or the other (measured 0.07-0.28)


def test_open_tokens_extend_the_demo_vocabulary():
    assert open_text.VOCABULARY[:len(text.VOCABULARY)] == text.VOCABULARY
    w, s = open_text.tokens_for("a red circle at the top, a shape, on a striped background")
    assert w.shape == (open_text.TOKENS, open_text.WORDS_PER_TOKEN) and s.tolist() == [0, 1, 2, 3]
    idx = open_text.VOCABULARY.index
    assert set(w[0].tolist()) - {0} == {idx("texture:striped")}
    assert set(w[1].tolist()) - {0} == {idx("object:shape"), idx("color:red"), idx("shape:circle"), idx("position:top")}
    assert set(w[2].tolist()) - {0} == {idx("object:shape")} and w[3, 0] == idx("<absent>")
    some, _ = open_text.tokens_for("some shapes")
    assert (some[1:, 0] == idx("<open>")).all() and (some[0] == 0).all()
    null, _ = open_text.tokens_for("")
    assert (null[:, 0] == idx("<null>")).all()


def test_open_encoder_starts_from_the_demo_encoder_which_is_unchanged():
    demo = text.TextEncoder()
    ctx, extras = demo.conditioning("a red circle at the top, on a white background")[0]
    w, s = text.tokens_for("a red circle at the top, on a white background")
    assert torch.equal(ctx[0], demo.words(w).sum(-2) + demo.slots(s))  # the demo grammar's encoding as before
    assert demo.words.num_embeddings == len(text.VOCABULARY) and demo.slots.num_embeddings == len(text.SLOTS)
    enc = open_text.from_demo(demo)
    assert torch.equal(enc.words.weight[:len(text.VOCABULARY)], demo.words.weight)
    assert enc.words.num_embeddings == len(open_text.VOCABULARY)
    c = enc.conditioning("a red circle at the top, on a white background")[0][0]
    assert c.shape == (1, 4, text.EMBED_DIM) and not torch.equal(c, ctx)


def test_shipped_open_model_loads_with_its_encoder():
    from demo import models
    m = models.load("demo-flux-open")
    assert isinstance(m.text_encoder, open_text.OpenTextEncoder) and m.metadata["world"] == "open"
    assert float(m.metadata["total_minutes"]) > 0
    assert m.conditioning("a blue shape, on a dotted background")[0][0].shape == (1, 4, text.EMBED_DIM)
    assert type(models.load("demo-flux").text_encoder) is text.TextEncoder


def test_scores_use_only_prompted_attributes():
    prompt = "a red circle at the top left, a shape"
    d = open_world.realize(open_world.parse(prompt), torch.Generator().manual_seed(3))
    img = open_world.render_drawing(d, 64, 64)[0]
    assert open_world.scene_accuracy(img, prompt) == 1.0
    # another open object: still right; moving the red circle: wrong
    other = dataclasses.replace(d, objects=(d.objects[0], dataclasses.replace(
        d.objects[1], obj=dataclasses.replace(d.objects[1].obj, color="green" if d.objects[1].obj.color != "green"
                                              else "cyan"))))
    assert open_world.scene_accuracy(open_world.render_drawing(other, 64, 64)[0], prompt) == 1.0
    moved = dataclasses.replace(d, objects=(dataclasses.replace(
        d.objects[0], obj=dataclasses.replace(d.objects[0].obj, position="center" if d.objects[1].obj.position != "center"
                                              else "right")), d.objects[1]))
    assert open_world.scene_accuracy(open_world.render_drawing(moved, 64, 64)[0], prompt) == 0.5


def test_open_training_chunks_resume_from_the_exported_weights(tmp_path):
    import json
    import os

    from demo import models, train
    tiny = ["--curriculum", json.dumps({"8": [2, 1.0]}), "--threads", "1", "--probe-minutes", "1000"]
    first, weights = str(tmp_path / "a"), str(tmp_path / "open.safetensors")
    assert train.main(["--world", "open", "--init", models.weights_path("demo-flux"), "--out", first,
                       "--max-steps", "2"] + tiny) == 0
    with open(os.path.join(first, "log.jsonl"), "w") as f:  # as the loop writes every 50 steps
        f.write(json.dumps({"step": 2, "loss": 0.5, "total_steps": 2, "total_minutes": 0.1}) + "\n")
    assert train.main(["--world", "open", "--out", first, "--export", weights] + tiny) == 0
    m = models.load(weights)
    assert m.metadata["world"] == "open" and m.metadata["total_steps"] == "2"
    assert isinstance(m.text_encoder, open_text.OpenTextEncoder)
    demo = models.load("demo-flux")  # the demo words start where demo-flux has them
    assert torch.allclose(m.text_encoder.words.weight[:len(text.VOCABULARY)].float(),
                          demo.text_encoder.words.weight.float(), atol=0.05)
    # the next chunk starts from the exported weights and counts on from them
    second = str(tmp_path / "b")
    assert train.main(["--world", "open", "--init", weights, "--out", second, "--max-steps", "1"] + tiny) == 0
    with open(os.path.join(second, "log.jsonl"), "w") as f:
        f.write(json.dumps({"step": 1, "loss": 0.4, "total_steps": 3, "total_minutes": 0.2}) + "\n")
    assert train.main(["--world", "open", "--init", weights, "--out", second, "--export", weights] + tiny) == 0
    assert models.load(weights).metadata["total_steps"] == "3"
    log = [json.loads(x) for x in open(str(tmp_path / "open.log.jsonl"))]
    assert [r["total_steps"] for r in log] == [2, 3]
    with pytest.raises(SystemExit):
        train.main(["--world", "open", "--task", "kontext", "--out", str(tmp_path / "c")] + tiny)


def test_bench_model_scores_the_open_world():
    from bench import models as bench_models_registry
    bm = bench_models_registry.load("demo-flux-open")
    jobs = bm.jobs(2, [0, 1], 16, 16)
    assert len(jobs) == 4 and jobs[0].label == open_world.benchmark_prompts(2)[0]
    render = open_world.renders_of(jobs[0].label, 32, 32, [5])
    s = jobs[0].score(render)
    assert s["scene_accuracy"] == 1.0 and abs(s["detail_db"]) < 4.0
    assert jobs[0].score(open_world.gaussian_blur(render, 1.0))["detail_db"] < s["detail_db"] - 2.0
