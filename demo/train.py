"""Train the demo models on the demo world (rectified flow, several resolutions, CFG dropout).

    # demo-flux from scratch, on one CPU thread, checkpointing every 5 minutes (resumable):
    python -m demo.train --task flux --out demo/_train/flux --minutes 240 --threads 1
    # continue a run later: the same command (it resumes from OUT/checkpoint.pt)
    # demo-kontext, fine-tuned from demo-flux on edit pairs:
    python -m demo.train --task kontext --init demo/weights/demo_flux.safetensors --out demo/_train/kontext --minutes 60
    # write the EMA weights of a run as the shipped bf16 file:
    python -m demo.train --task flux --out demo/_train/flux --export demo/weights/demo_flux.safetensors
    # demo-flux-open on the open world (demo/open_world.py), in chunks that resume from the shipped
    # weights (fresh optimizer, 200-step warm-up); --export also appends the run's log to
    # demo/weights/demo_flux_open.log.jsonl with cumulative minutes:
    python -m demo.train --world open --init demo/weights/demo_flux_open.safetensors --out demo/_train/open --minutes 60
    python -m demo.train --world open --out demo/_train/open --export demo/weights/demo_flux_open.safetensors
    # more capacity for a trained model: blocks that start as the identity (pass the same flag to --export)
    python -m demo.train --world open --init demo/weights/demo_flux_open.safetensors --grow-single-blocks 4 --out OUT

Every step draws fresh scenes (seeded), renders them at one latent size of the curriculum (16x16 to
64x64 latents, batch scaled to keep the token count per step similar), and regresses the FLUX
velocity eps - x0 at a noise level t drawn with a bias towards high noise, where layout is decided.
10% of the prompts are replaced by the unconditional prompt (classifier-free guidance). comfy's Flux
blocks add in place, so the forward runs under saved_tensors_hooks that clone what autograd saves.
A probe (scene and shape accuracy of a few samples from pure noise) is logged periodically.
"""
import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# latent size -> (batch, share of steps); the batch keeps ~1-2k image tokens per step
CURRICULUM = {16: (24, 0.45), 24: (12, 0.20), 32: (8, 0.20), 48: (3, 0.07), 64: (2, 0.08)}
# the open world: textures need the main size (32) more than the demo world does
OPEN_CURRICULUM = {16: (24, 0.30), 24: (12, 0.15), 32: (8, 0.45), 48: (3, 0.05), 64: (2, 0.05)}
# edits carry the source image as reference tokens: half the batch for the same token count
EDIT_CURRICULUM = {16: (12, 0.45), 24: (6, 0.20), 32: (4, 0.20), 48: (2, 0.07), 64: (1, 0.08)}
CFG_DROPOUT = 0.1
OBJECT_WEIGHT = 2.0  # latent pixels covered by objects weigh 1 + this in the loss (objects are small)
HIGH_T_SHIFT = 1.0   # t = shift_mu(u), u ~ U(0,1): mu = 1 puts more steps at high noise ...
UNIFORM_SHARE = 0.3  # ... and this share of samples draws t uniformly
FLUX_MU = 1.15       # comfy.supported_models.Flux sampling shift, used by the probe sampler


def _boot():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from fastdit.testing import comfy_env
    comfy_env.boot(load_pack=False)


@contextlib.contextmanager
def _training_mode(stop):
    """For the training loop only: `kill PID` asks the loop to stop (appended to `stop`), and RoPE has
    gradients (_differentiable_rope). The SIGTERM handler is put back afterwards, so a process that
    trains and goes on (the tests) keeps its own; ComfyUI's state is not touched (its `in_training`
    flag, which some releases read to pick a differentiable RoPE, is left as it is: the registered
    formula makes their fused RoPE differentiable instead)."""
    handler = signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        _differentiable_rope()
        yield
    finally:
        signal.signal(signal.SIGTERM, handler)


def _rope1(x, freqs_cis):
    """FLUX RoPE on one tensor in plain torch (differentiable)."""
    x_ = x.to(dtype=freqs_cis.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs_cis[..., 0] * x_[..., 0] + freqs_cis[..., 1] * x_[..., 1]
    return out.reshape(*x.shape).type_as(x)


def _rope_grad(x, freqs_cis, grad):
    """Gradient of _rope1 with respect to x (the frequencies are constants)."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        return torch.autograd.grad(_rope1(leaf, freqs_cis), leaf, grad)[0]


def _differentiable_rope():
    """Training needs gradients through RoPE. Newer ComfyUI releases apply it with fused kernel ops
    (comfy_kitchen::apply_rope / apply_rope1) that have no autograd formula outside ComfyUI's own
    training mode: probe it, and register the formula of the plain-torch RoPE for those ops in this training process
    (torch.library.register_autograd, the remedy the error names; ComfyUI's code is untouched)."""
    import comfy.ldm.flux.math as flux_math
    x = torch.randn(1, 1, 2, 4, requires_grad=True)
    freqs = flux_math.rope(torch.arange(2, dtype=torch.float32)[None], 4, 10000)[:, None]
    try:
        flux_math.apply_rope1(x, freqs).sum().backward()
        return
    except RuntimeError:
        pass

    def save_inputs(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def rope1_backward(ctx, grad):
        x, freqs_cis = ctx.saved_tensors
        return _rope_grad(x, freqs_cis, grad), None

    def rope_backward(ctx, grad_q, grad_k):
        xq, xk, freqs_cis = ctx.saved_tensors
        return _rope_grad(xq, freqs_cis, grad_q), _rope_grad(xk, freqs_cis, grad_k), None

    torch.library.register_autograd("comfy_kitchen::apply_rope1", rope1_backward, setup_context=save_inputs)
    torch.library.register_autograd("comfy_kitchen::apply_rope", rope_backward, setup_context=save_inputs)


def shift(t, mu):
    return math.exp(mu) / (math.exp(mu) + (1 / t.clamp(min=1e-6) - 1))


def sample_t(n, gen):
    u = torch.rand(n, generator=gen).clamp(1e-4, 1 - 1e-4)
    t = shift(u, HIGH_T_SHIFT)
    uniform = torch.rand(n, generator=gen) < UNIFORM_SHARE
    return torch.where(uniform, u, t)


def encode_images(images, latent_format):
    from demo.latent_space import pixels_to_latent
    return latent_format.process_in(pixels_to_latent(images))


def pixel_mask_weight(mask, weight=OBJECT_WEIGHT):
    """Loss weight per latent pixel [B,1,h/2,w/2] from an object mask [B,h,w] of image pixels: 1, plus
    `weight` where a 2x2 patch shows an object."""
    return 1 + weight * torch.nn.functional.max_pool2d(mask.float()[:, None], 2)


def object_weight(images, scenes, weight=OBJECT_WEIGHT):
    """pixel_mask_weight of the pixels that differ from the scene's background (the demo world)."""
    from demo import world
    h, w = images.shape[1:3]
    bg = torch.stack([world.background_image(s.background, h, w) for s in scenes])
    return pixel_mask_weight((images - bg).abs().amax(-1) > 0.02, weight)


def _token_batch(toks, null_tokens, gen, cfg_dropout):
    """Stacked (word ids, slot ids) of a batch, each prompt dropped to the unconditional one with
    probability cfg_dropout (classifier-free guidance training)."""
    words = torch.stack([t[0] for t in toks])
    slots = torch.stack([t[1] for t in toks])
    drop = torch.rand(len(toks), generator=gen) < cfg_dropout
    if drop.any():
        nw, ns = null_tokens()
        words[drop] = nw
        slots[drop] = ns
    return words, slots


def open_batch(size, batch, gen, latent_format, cfg_dropout=CFG_DROPOUT, obj_weight=OBJECT_WEIGHT):
    """make_batch for the open world: random open prompts, each realised from `gen`."""
    from demo import open_text, open_world
    h = w = 2 * size
    scenes = [open_world.random_prompt_scene(gen) for _ in range(batch)]
    toks = [open_text.scene_tokens(s) for s in scenes]
    layers = [open_world.render_drawing(open_world.realize(s, gen), h, w) for s in scenes]
    images = torch.stack([img for img, _ in layers])
    obj = torch.stack([(cov.sum(0) if cov.shape[0] else torch.zeros(h, w)) > 0.02 for _, cov in layers])
    weights = pixel_mask_weight(obj, obj_weight)
    x0 = encode_images(images, latent_format)
    words, slots = _token_batch(toks, open_text.null_tokens, gen, cfg_dropout)
    return x0, words, slots, None, scenes, weights


def make_batch(task, size, batch, gen, latent_format, cfg_dropout=CFG_DROPOUT, world_name="demo",
               obj_weight=OBJECT_WEIGHT):
    """(x0, word ids, slot ids, reference latents or None, scenes, loss weights) for one step."""
    from demo import text, world
    if world_name == "open":
        return open_batch(size, batch, gen, latent_format, cfg_dropout, obj_weight)
    h = w = 2 * size
    if task == "flux":
        scenes = [world.random_scene(gen) for _ in range(batch)]
        toks = [text.scene_tokens(s) for s in scenes]
        images = world.render(scenes, h, w, gen, jitter=0.03)
        refs = None
    else:
        pairs = []
        while len(pairs) < batch:
            src = world.random_scene(gen, unique_shapes=True)
            edit = world.random_edit(gen, src)
            if edit is not None:
                pairs.append((src, edit, edit.apply(src)))
        scenes = [p[2] for p in pairs]
        toks = [text.edit_tokens(p[1]) for p in pairs]
        # one seeded jitter shared by source and target, so unedited objects stay in place
        imgs_src, imgs_tgt = [], []
        for src, _, tgt in pairs:
            seed = int(torch.randint(2 ** 31, (1,), generator=gen))
            imgs_src.append(world.render(src, h, w, torch.Generator().manual_seed(seed), jitter=0.03)[0])
            imgs_tgt.append(_render_edit_target(src, tgt, h, w, seed))
        images = torch.stack(imgs_tgt)
        refs = [encode_images(torch.stack(imgs_src), latent_format)]
    x0 = encode_images(images, latent_format)
    weights = object_weight(images, scenes, obj_weight)
    words, slots = _token_batch(toks, text.null_tokens, gen, cfg_dropout)
    return x0, words, slots, refs, scenes, weights


def _render_edit_target(src, tgt, h, w, seed):
    """The target drawn with the same per-object jitter as the source (objects matched by shape)."""
    from demo import world
    jitter = dict(zip((o.shape for o in src.objects),
                      world.draw_jitter(len(src.objects), torch.Generator().manual_seed(seed), 0.03)))
    return world.render_layers(tgt, h, w, offsets=[jitter[o.shape] for o in tgt.objects])[0]


def forward(model, x, t, words, slots, refs):
    """Velocity prediction of the demo model (the same FLUX forward and position patch as in ComfyUI)."""
    from demo import position
    ctx, pooled = model.text_encoder(words, slots)
    opts = {"patches": {"post_input": [position.post_input_patch(model.position)]}}
    return model.diffusion_model(x, t, ctx, y=pooled, ref_latents=refs, transformer_options=opts)


def loss_on(model, x0, words, slots, refs, gen, weights=None):
    t = sample_t(x0.shape[0], gen)
    eps = torch.randn(x0.shape, generator=gen)
    tt = t[:, None, None, None]
    xt = (1 - tt) * x0 + tt * eps
    with torch.autocast("cpu", dtype=torch.bfloat16), \
            torch.autograd.graph.saved_tensors_hooks(lambda s: s.clone(), lambda s: s):  # Flux blocks add in place
        v = forward(model, xt, t, words, slots, refs)
    err = (v.float() - (eps - x0)) ** 2
    if weights is None:
        return err.mean()
    return (err * weights).mean() / weights.mean()


@torch.no_grad()
def sample(model, prompts_tokens, size, steps=12, cfg=3.0, seed=0, refs=None, null=None):
    """Euler sampling from pure noise with FLUX's shifted schedule (for the training probe)."""
    from demo import text
    words = torch.stack([t[0] for t in prompts_tokens])
    slots = torch.stack([t[1] for t in prompts_tokens])
    n = words.shape[0]
    nw, ns = null if null is not None else text.null_tokens()
    x = torch.randn(n, 16, size, size, generator=torch.Generator().manual_seed(seed))
    ts = shift(torch.linspace(1, 0, steps + 1), FLUX_MU)
    ts[-1] = 0
    w_all = torch.cat([words, nw.expand(n, -1, -1)])
    s_all = torch.cat([slots, ns.expand(n, -1)])
    refs2 = [torch.cat([r, r]) for r in refs] if refs is not None else None
    for i in range(steps):
        t = ts[i].expand(2 * n)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v = forward(model, torch.cat([x, x]), t, w_all, s_all, refs2).float()
        vc, vu = v[:n], v[n:]
        x = x + (ts[i + 1] - ts[i]) * (vu + cfg * (vc - vu))
    return x


def open_probe(model, latent_format, size=32, n=8, steps=12, cfg=3.0):
    """Open world: scene accuracy and detail (dB against renders of the same prompts) of samples."""
    from demo import open_text, open_world
    from demo.latent_space import latent_to_pixels
    prompts = open_world.benchmark_prompts(n, seed=777)
    x = sample(model, [open_text.tokens_for(p) for p in prompts], size, steps, cfg, null=open_text.null_tokens())
    imgs = latent_to_pixels(latent_format.process_out(x))
    refs = torch.cat([open_world.renders_of(p, 2 * size, 2 * size, range(4)) for p in prompts])
    return {"scene_acc": open_world.scene_accuracy(imgs, prompts), "shape_acc": open_world.shape_accuracy(imgs, prompts),
            "detail_db": round(open_world.detail_db(imgs, refs), 2)}


def probe(model, task, latent_format, size=16, n=16, steps=12, cfg=3.0):
    """Scene / shape accuracy of samples from pure noise for fixed prompts (and edits)."""
    from demo import text, world
    from demo.latent_space import latent_to_pixels
    gen = torch.Generator().manual_seed(777)
    if task == "flux":
        scenes = [world.random_scene(gen) for _ in range(n)]
        toks = [text.scene_tokens(s) for s in scenes]
        refs = None
    else:
        x0, words, slots, refs, scenes, _ = make_batch("kontext", size, n, gen, latent_format, cfg_dropout=0.0)
        toks = list(zip(words, slots))
    x = sample(model, toks, size, steps, cfg, refs=refs)
    imgs = latent_to_pixels(latent_format.process_out(x))
    return {"scene_acc": world.scene_accuracy(imgs, scenes), "shape_acc": world.shape_accuracy(imgs, scenes)}


class EMA:
    def __init__(self, params, decay):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, params):
        for s, p in zip(self.shadow, params):
            s.lerp_(p.detach(), 1 - self.decay)

    @torch.no_grad()
    def copy_to(self, params):
        for s, p in zip(self.shadow, params):
            p.copy_(s)


def _params(model):
    return [p for m in (model.diffusion_model, model.text_encoder, model.position) for p in m.parameters()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["flux", "kontext"], default="flux")
    ap.add_argument("--world", choices=["demo", "open"], default="demo",
                    help="open: the open world (demo/open_world.py), text to image only")
    ap.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.jsonl")
    ap.add_argument("--init", default=None, help="start from these weights (safetensors) instead of scratch")
    ap.add_argument("--minutes", type=float, default=60, help="train this long (then checkpoint and stop)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=200, help="steps of linear learning-rate warm-up")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-minutes", type=float, default=5)
    ap.add_argument("--probe-minutes", type=float, default=15)
    ap.add_argument("--curriculum", default=None, help="JSON {latent size: [batch, share]} to override")
    ap.add_argument("--grow-single-blocks", type=int, default=0,
                    help="add this many single-stream blocks to the --init model, each starting as the identity")
    ap.add_argument("--object-weight", type=float, default=OBJECT_WEIGHT,
                    help="latent pixels covered by objects weigh 1 + this in the loss")
    ap.add_argument("--export", default=None, help="write the run's EMA weights (bf16 safetensors) and exit")
    args = ap.parse_args(argv)

    _boot()
    torch.set_num_threads(args.threads)
    from demo import models
    import comfy.latent_formats
    latent_format = comfy.latent_formats.Flux()
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    if args.world == "open" and args.task != "flux":
        ap.error("--world open trains text to image only (--task flux)")
    curriculum = {int(k): tuple(v) for k, v in json.loads(args.curriculum).items()} if args.curriculum \
        else (OPEN_CURRICULUM if args.world == "open" else CURRICULUM if args.task == "flux" else EDIT_CURRICULUM)

    model = models.load(args.init, dtype=torch.float32) if args.init else models.new(seed=args.seed)
    if args.grow_single_blocks:
        model = models.grow(model, args.grow_single_blocks, seed=args.seed)
    base = {"steps": 0, "minutes": 0.0}  # open world: training before this run (from the --init weights)
    if args.world == "open":
        from demo import open_text
        if model.metadata.get("world") == "open":
            base = {"steps": int(model.metadata.get("total_steps", 0)),
                    "minutes": float(model.metadata.get("total_minutes", 0.0))}
        else:  # from a demo-world model or from scratch: the demo words keep their rows
            model.text_encoder = open_text.from_demo(model.text_encoder)
        model.metadata = {k: v for k, v in model.metadata.items() if k in ("world",)}
    params = _params(model)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    ema = EMA(params, args.ema)
    state = {"step": 0, "images": 0, "seconds": 0.0}
    gen = torch.Generator().manual_seed(args.seed)
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, weights_only=False)
        for p, v in zip(params, ck["params"]):
            p.data.copy_(v)
        ema.shadow = ck["ema"]
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        gen.set_state(ck["gen"])
        print(f"resumed {ckpt_path} at step {state['step']} ({state['seconds'] / 60:.1f} min trained)")

    if args.world == "open":
        base = state.setdefault("base", base)
    if args.export:
        ema.copy_to(params)
        model.metadata.update({"task": args.task, "steps": str(state["step"]), "images": str(state["images"]),
                               "train_minutes": f"{state['seconds'] / 60:.1f}"})
        if args.world == "open":
            model.metadata.update({"world": "open", "total_steps": str(base["steps"] + state["step"]),
                                   "total_minutes": f"{base['minutes'] + state['seconds'] / 60:.2f}"})
            _append_log(os.path.join(args.out, "log.jsonl"), os.path.splitext(args.export)[0] + ".log.jsonl")
        model.save(args.export)
        print(f"wrote {args.export} ({os.path.getsize(args.export) / 2 ** 20:.1f} MiB)")
        return 0

    def save():
        torch.save({"params": [p.detach() for p in params], "ema": ema.shadow, "opt": opt.state_dict(),
                    "state": state, "gen": gen.get_state(), "task": args.task}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    sizes = list(curriculum)
    shares = torch.tensor([curriculum[s][1] for s in sizes])
    log = open(os.path.join(args.out, "log.jsonl"), "a")
    t_start = time.time()
    last_ckpt = last_probe = time.time()
    losses = []
    stop = []
    with _training_mode(stop), log:
        while not stop and time.time() - t_start < args.minutes * 60 and \
                (args.max_steps is None or state["step"] < args.max_steps):
            t0 = time.time()
            size = sizes[int(torch.multinomial(shares, 1, generator=gen))]
            batch = curriculum[size][0]
            x0, words, slots, refs, _, weights = make_batch(args.task, size, batch, gen, latent_format,
                                                            world_name=args.world, obj_weight=args.object_weight)
            lr = args.lr * min(1.0, (state["step"] + 1) / args.warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = loss_on(model, x0, words, slots, refs, gen, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            ema.update(params)
            state["step"] += 1
            state["images"] += batch
            state["seconds"] += time.time() - t0
            losses.append(loss.item())
            if state["step"] % 50 == 0:
                rec = {"step": state["step"], "loss": sum(losses) / len(losses), "images": state["images"],
                       "minutes": round(state["seconds"] / 60, 2), "img_per_s": round(batch / (time.time() - t0), 1), "lr": lr}
                if args.world == "open":
                    rec.update(_totals(base, state))
                losses = []
                log.write(json.dumps(rec) + "\n")
                log.flush()
            if time.time() - last_ckpt > args.checkpoint_minutes * 60:
                save()
                last_ckpt = time.time()
            if time.time() - last_probe > args.probe_minutes * 60:
                backup = [p.detach().clone() for p in params]
                ema.copy_to(params)
                res = open_probe(model, latent_format) if args.world == "open" else probe(model, args.task, latent_format)
                for p, b in zip(params, backup):
                    p.data.copy_(b)
                rec = {"step": state["step"], "minutes": round(state["seconds"] / 60, 2), "probe_ema": res}
                if args.world == "open":
                    rec.update(_totals(base, state))
                log.write(json.dumps(rec) + "\n")
                log.flush()
                last_probe = time.time()
    save()
    print(f"stopped at step {state['step']} ({state['images']} images, {state['seconds'] / 60:.1f} min); "
          f"checkpoint {ckpt_path}")
    return 0


def _totals(base, state):
    return {"total_steps": base["steps"] + state["step"], "total_minutes": round(base["minutes"] + state["seconds"] / 60, 2)}


def _append_log(run_log, shipped_log):
    """Append the run's records that are newer (by total_minutes) than the shipped log's last one."""
    last = -1.0
    if os.path.exists(shipped_log):
        lines = [json.loads(x) for x in open(shipped_log) if x.strip()]
        last = max((r.get("total_minutes", -1.0) for r in lines), default=-1.0)
    if not os.path.exists(run_log):
        return
    with open(shipped_log, "a") as out:
        for line in open(run_log):
            if line.strip() and json.loads(line).get("total_minutes", -1.0) > last:
                out.write(line if line.endswith("\n") else line + "\n")


if __name__ == "__main__":
    sys.exit(main())
