"""The training script runs, checkpoints, resumes and exports (a few tiny steps; no real training)."""
import json
import os

import torch

from demo import models, train, world


def test_train_resume_export_and_finetune(tmp_path):
    out = str(tmp_path / "run")
    common = ["--out", out, "--curriculum", json.dumps({"8": [2, 1.0]}), "--threads", "1", "--probe-minutes", "1000"]
    assert train.main(["--task", "flux", "--max-steps", "2"] + common) == 0
    assert train.main(["--task", "flux", "--max-steps", "3"] + common) == 0  # resumes at step 2
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    ck = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
    assert ck["state"]["step"] == 3 and ck["state"]["images"] == 6 and log == []
    weights = str(tmp_path / "flux.safetensors")
    assert train.main(["--task", "flux", "--export", weights] + common) == 0
    m = models.load(weights)
    assert m.metadata["steps"] == "3" and m.metadata["task"] == "flux"
    # the edit task starts from those weights
    out2 = str(tmp_path / "kontext")
    assert train.main(["--task", "kontext", "--init", weights, "--out", out2, "--max-steps", "1", "--curriculum",
                       json.dumps({"8": [2, 1.0]}), "--probe-minutes", "1000"]) == 0


def test_training_mode_is_put_back_after_a_run(tmp_path):
    """The SIGTERM handler holds for the training loop only and ComfyUI's in_training flag is never
    set: the process that trained (here the test session) keeps its inference paths and its handler."""
    import signal

    import comfy.model_management as mm
    absent = object()
    flag, handler = getattr(mm, "in_training", absent), signal.getsignal(signal.SIGTERM)
    assert train.main(["--task", "flux", "--max-steps", "1", "--out", str(tmp_path / "run"), "--curriculum",
                       json.dumps({"8": [2, 1.0]}), "--probe-minutes", "1000"]) == 0
    assert getattr(mm, "in_training", absent) is flag and signal.getsignal(signal.SIGTERM) is handler


def test_edit_pairs_share_the_jitter_of_unedited_objects():
    gen = torch.Generator().manual_seed(0)
    src = world.parse("a red circle at the top left, a blue square at the bottom right, on a white background")
    tgt = world.parse_edit("make the circle green").apply(src)
    a = world.render(src, 48, 48, torch.Generator().manual_seed(5), jitter=0.03)[0]
    b = train._render_edit_target(src, tgt, 48, 48, 5)
    changed = (a - b).abs().amax(-1) > 1e-6
    _, vis = world.render_layers(src, 48, 48, torch.Generator().manual_seed(5), jitter=0.03)
    assert changed.any() and not changed[vis[1] > 0].any() and (changed <= (vis[0] > 0)).all()
    del gen


def test_probe_scores_a_model():
    import comfy.latent_formats
    res = train.probe(models.new(), "flux", comfy.latent_formats.Flux(), size=8, n=2, steps=1)
    assert set(res) == {"scene_acc", "shape_acc"} and 0 <= res["scene_acc"] <= 1


def test_finetuning_starts_from_fp32_weights(tmp_path):
    path = str(tmp_path / "m.safetensors")
    models.new().save(path)  # shipped files are bf16
    out = str(tmp_path / "run")
    assert train.main(["--task", "kontext", "--init", path, "--out", out, "--max-steps", "1", "--curriculum",
                       json.dumps({"8": [1, 1.0]}), "--probe-minutes", "1000"]) == 0
    ck = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
    assert all(p.dtype == torch.float32 for p in ck["params"])


def test_kill_checkpoints_and_stops(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    out = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "demo.train", "--task", "flux", "--out", out, "--minutes", "10",
                             "--curriculum", json.dumps({"8": [1, 1.0]}), "--probe-minutes", "1000"],
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = os.path.join(out, "log.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(log) and os.path.getsize(log) > 0):
        time.sleep(0.2)  # training has run 50 steps
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped at step" in text
    ck = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
    assert ck["state"]["step"] >= 50


def test_grown_model_starts_as_the_model_and_trains_resumes_and_exports(tmp_path):
    """--grow-single-blocks adds identity blocks: the forward is unchanged until training moves them;
    a resumed run grows the same way before loading its checkpoint, and the export keeps the depth."""
    from demo import open_text
    demo = models.load("demo-flux-open", dtype=torch.float32)
    grown = models.grow(demo, 2)
    assert grown.config["depth_single_blocks"] == demo.config["depth_single_blocks"] + 2
    assert len(grown.diffusion_model.single_blocks) == len(demo.diffusion_model.single_blocks) + 2
    words, slots = open_text.tokens_for("a red circle at the left, on a striped background")
    x, t = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.6])
    with torch.no_grad():
        a = train.forward(demo, x, t, words[None], slots[None], None)
        b = train.forward(grown, x, t, words[None], slots[None], None)
    assert torch.equal(a, b)
    out, weights = str(tmp_path / "grow"), str(tmp_path / "grown.safetensors")
    args = ["--world", "open", "--init", models.weights_path("demo-flux-open"), "--grow-single-blocks", "2",
            "--object-weight", "4", "--out", out, "--curriculum", json.dumps({"8": [2, 1.0]}), "--threads", "1",
            "--probe-minutes", "1000"]
    assert train.main(args + ["--max-steps", "1"]) == 0
    assert train.main(args + ["--max-steps", "2"]) == 0  # resumes the grown model's checkpoint
    assert torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)["state"]["step"] == 2
    assert train.main(args + ["--export", weights]) == 0
    m = models.load(weights, dtype=torch.float32)
    assert m.config["depth_single_blocks"] == demo.config["depth_single_blocks"] + 2
    with torch.no_grad():
        c = train.forward(m, x, t, words[None], slots[None], None)
    assert not torch.equal(c.float(), a.float())  # trained: the new blocks' gates moved
