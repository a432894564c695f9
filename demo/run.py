"""`make demo`: run every shared workflow through the real ComfyUI server on CPU and print results,
then bench the demo model: baseline against every accelerated configuration that exists, side by
side in one process (python -m bench.fidelity), and print the table.

Images are copied to out/demo/, the bench's results.json and grid.png to out/demo/bench/.
Usage: python -m demo.run [--out DIR] [--bench-prompts N] [--no-bench]"""
import argparse
import glob
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_workflows():
    """(name, API graph) for each UI workflow in workflows/ that has an API twin in tests/workflows/."""
    out = []
    for ui_path in sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json"))):
        name = os.path.splitext(os.path.basename(ui_path))[0]
        twin = os.path.join(ROOT, "tests", "workflows", f"{name}_api.json")
        if os.path.exists(twin):
            with open(twin) as f:
                out.append((name, json.load(f)))
    return out


def summarize(entry, server, out_dir, name):
    lines = []
    for node_id, ui in sorted(entry.get("outputs", {}).items(), key=lambda kv: int(kv[0])):
        for text in ui.get("text", []):
            lines.append(f"  node {node_id}: {text}")
        for img in ui.get("images", []):
            dst = os.path.join(out_dir, f"{name}_{img['filename']}")
            with open(dst, "wb") as f:
                f.write(server.view(img))
            lines.append(f"  node {node_id}: saved {os.path.relpath(dst, ROOT)}")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "demo"))
    ap.add_argument("--no-bench", action="store_true", help="only run the workflows")
    ap.add_argument("--bench-prompts", type=int, default=2, help="prompts of the bench (default 2)")
    ap.add_argument("--bench-steps", type=int, default=50)
    ap.add_argument("--bench-size", type=int, default=32,
                    help="latent side of the bench (default 32, the demo models' main size: 256 tokens)")
    args = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from fastdit.testing.server import ComfyServer, execution_error

    os.makedirs(args.out, exist_ok=True)
    workflows = shared_workflows()
    print(f"Starting ComfyUI (CPU) with ComfyUI-FastDiT; {len(workflows)} shared workflow(s)")
    failures = 0
    with ComfyServer() as server:
        for name, graph in workflows:
            t0 = time.time()
            entry = server.run(graph)
            ok = entry["status"]["status_str"] == "success"
            print(f"[{'ok' if ok else 'FAILED'}] workflows/{name}.json in {time.time() - t0:.1f}s")
            if ok:
                print("\n".join(summarize(entry, server, args.out, name)))
            else:
                failures += 1
                err = execution_error(entry) or {}
                print(f"  {err.get('node_type')}: {err.get('exception_message')}")
    if not args.no_bench:
        failures += run_bench(args)
    return 1 if failures else 0


def run_bench(args):
    """The demo-flux bench: the baseline vs every registered configuration that runs at its defaults on
    a text-to-image model (SpecEdit needs an edit model; `euler` needs a step count: the bench adds the
    matched-cost Euler rows itself)."""
    from bench import fidelity
    fidelity._boot()
    from bench import configs as registry
    names = ["baseline"] + [n for n in registry.defaults(edit_model=False) if n != "baseline"]
    out = os.path.join(args.out, "bench")
    print(f"\nBench: demo-flux, {args.bench_steps} steps, {args.bench_size}x{args.bench_size} latent, "
          f"{args.bench_prompts} prompt(s), configurations {', '.join(names)}")
    t0 = time.time()
    code = fidelity.main(["--model", "demo-flux", "--configs", *names, "--steps", str(args.bench_steps),
                          "--size", str(args.bench_size), "--prompts", str(args.bench_prompts), "--out", out])
    print(f"bench done in {time.time() - t0:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
