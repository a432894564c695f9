"""Run the stacking matrix (fastdit/testing/stacking.py) and rewrite the README's compatibility table.

    .venv/bin/python scripts/compat_table.py           # measure, print every stack, rewrite README.md
    .venv/bin/python scripts/compat_table.py --check   # measure and print; exit 1 if README.md differs

Runs on the ComfyUI that $COMFYUI_ROOT names (default: the vendored one), on CPU, in a scratch
ComfyUI base directory."""
import argparse
import logging
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when README.md is stale")
    parser.add_argument("--verbose", action="store_true", help="keep ComfyUI's log (a traceback per refused graph)")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from fastdit.testing import comfy_env
    comfy_env.boot(base_directory=tempfile.mkdtemp(prefix="fastdit-compat-"))
    import torch
    torch.set_num_threads(1)
    from fastdit.testing import stacking

    if not args.verbose:
        logging.getLogger().setLevel(logging.CRITICAL)
    start = time.time()
    outcomes = stacking.run_matrix()
    import comfyui_version
    print(f"ComfyUI {comfyui_version.__version__}: {len(outcomes)} stacks in {time.time() - start:.0f} s")
    for outcome in outcomes.values():
        print("  " + outcome.line())
    with open(README) as f:
        text = f.read()
    section = stacking.readme_section(outcomes)
    new = stacking.replace_section(text, section)
    broken = [o for o in outcomes.values() if o.verdict == "broken"]
    if args.check:
        difference = stacking.section_difference(stacking.current_section(text), section)
        if difference:
            print(f"README.md's compatibility table is stale ({difference}): run scripts/compat_table.py")
            return 1
    elif new != text:
        with open(README, "w") as f:
            f.write(new)
        print("README.md updated")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
