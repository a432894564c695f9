"""Soak: 100 mixed prompts through one real ComfyUI server, and its memory stays flat.

HiCache (on ComfyUI's KSampler) and the Fresco KSampler (text to image and img2img) on tiny FLUX
and Qwen-Image models, latents of 8x8 to 24x24 with the size changing from prompt to prompt, 4-6
steps, and every seventh prompt interrupted while it runs (POST /interrupt with its prompt_id).
After a warm-up of 10 prompts that has run every kind once, the resident memory of the server
process (psutil, with any children) may grow by less than 5% over the remaining 90.

Slow (deselected by default; `make test-all` or `-m slow`): about two minutes on a 2-core CPU.
"""
import json
import random
import time
import urllib.request

import pytest

from fastdit.testing.server import ComfyServer, execution_error

pytestmark = [pytest.mark.slow, pytest.mark.server]

PROMPTS, WARMUP, GROWTH = 100, 10, 0.05
SIZES = [(8, 8), (16, 16), (24, 24), (16, 24), (24, 8)]
FAMILIES = ["flux", "qwen_image"]
KINDS = ["hicache", "fresco", "fresco_img2img"]
INTERRUPT_EVERY = 7

FRESCO_KNOBS = {"stage_split": "5/6/7", "coarse_factor": "2", "first_upsample": 0.3, "upsample_per_step": 0.1,
                "selection": "variance", "renoise": "unified", "expansion": "hadamard", "transition": "same-t"}


def _graph(kind, family, size, steps, seed):
    """Tiny test model -> one technique -> decoded image -> Compare (the output node)."""
    width, height = size
    graph = {"1": {"class_type": "FastDiTTestModel", "inputs": {"family": family, "seed": seed % 3, "width": width,
                                                                "height": height, "frames": 1, "batch_size": 1}}}
    sample = {"positive": ["1", 1], "negative": ["1", 2], "latent_image": ["1", 3], "seed": seed, "steps": steps,
              "cfg": 2.0, "scheduler": "simple"}
    if kind == "hicache":
        graph["2"] = {"class_type": "FastDiTHiCache", "inputs": {
            "model": ["1", 0], "interval": 2, "order": 1, "sigma": 0.5, "warmup_steps": 1, "mode": "hicache",
            "start_percent": 0.0, "end_percent": 1.0, "granularity": "module"}}
        graph["3"] = {"class_type": "KSampler", "inputs": {"model": ["2", 0], "sampler_name": "euler",
                                                           "denoise": 1.0, **sample}}
    else:
        denoise = 0.6 if kind == "fresco_img2img" else 1.0
        graph["3"] = {"class_type": "FastDiTFrescoKSampler", "inputs": {
            "model": ["1", 0], "preset": "fast" if seed % 2 else "balanced", "denoise": denoise, **FRESCO_KNOBS,
            **sample}}
    graph["4"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 4]}}
    graph["5"] = {"class_type": "FastDiTCompare", "inputs": {"reference": ["4", 0], "candidate": ["4", 0]}}
    return graph


def _plan():
    """(kind, family, size, steps, seed, interrupt) per prompt; the warm-up covers every kind,
    family and size, and one interrupt."""
    rng = random.Random(0)
    plan = []
    for i in range(PROMPTS):
        if i < WARMUP:
            kind, family, size = KINDS[i % 3], FAMILIES[i % 2], SIZES[i % len(SIZES)]
        else:
            kind, family, size = rng.choice(KINDS), rng.choice(FAMILIES), rng.choice(SIZES)
            if size == plan[-1][2]:                     # the resolution changes between prompts
                size = SIZES[(SIZES.index(size) + 1) % len(SIZES)]
        plan.append((kind, family, size, rng.randint(4, 6), i, i % INTERRUPT_EVERY == INTERRUPT_EVERY - 1))
    return plan


def _rss(pid):
    import psutil
    proc = psutil.Process(pid)
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


def _interrupt(server, prompt_id):
    """POST /interrupt for one prompt (the server answers with an empty body)."""
    req = urllib.request.Request(server.url + "/interrupt", data=json.dumps({"prompt_id": prompt_id}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200


def _run(server, graph, interrupt, timeout=120):
    """Queue `graph`; with `interrupt`, POST /interrupt for it until it has finished (only a running
    prompt is interrupted). Returns its /history entry."""
    status, resp = server.queue(graph)
    assert status == 200, resp
    pid = resp["prompt_id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if interrupt:
            _interrupt(server, pid)
        hist = server.get(f"/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("status_str") in ("success", "error"):
            return hist[pid]
        time.sleep(0.005 if interrupt else 0.05)
    raise TimeoutError(f"prompt {pid} did not finish in {timeout}s:\n{server.log()}")


def _interrupted(entry):
    return any(event == "execution_interrupted" for event, _ in entry["status"].get("messages", []))


def test_soak_mixed_prompts_keep_memory_flat(record_property):
    rss, outcomes = [], {"success": 0, "interrupted": 0}
    with ComfyServer() as server:
        pid = server.proc.pid
        for kind, family, size, steps, seed, interrupt in _plan():
            entry = _run(server, _graph(kind, family, size, steps, seed), interrupt)
            if interrupt and _interrupted(entry):
                outcomes["interrupted"] += 1
            else:
                assert entry["status"]["status_str"] == "success", (kind, family, size, execution_error(entry))
                assert entry["outputs"]["5"]["fastdit_metrics"][0]["psnr"] == "inf"
                outcomes["success"] += 1
            rss.append(_rss(pid))
        assert server.get("/system_stats")                 # still serving
    base, last, peak = rss[WARMUP - 1], rss[-1], max(rss[WARMUP:])
    mib = 1 << 20
    summary = (f"RSS after the {WARMUP}-prompt warm-up {base / mib:.1f} MiB, after {PROMPTS} prompts {last / mib:.1f} "
               f"MiB ({(last / base - 1) * 100:+.2f}%), peak after warm-up {peak / mib:.1f} MiB "
               f"({(peak / base - 1) * 100:+.2f}%); {outcomes['success']} succeeded, "
               f"{outcomes['interrupted']} interrupted")
    print(summary)
    record_property("soak", summary)
    assert outcomes["interrupted"] >= 5, summary        # the interrupts did hit running prompts
    assert last < base * (1 + GROWTH), summary
