"""The pack loads through ComfyUI's own loader via the V3 entry point and is well-formed."""
import ast
import os

import pytest

from conftest import ROOT


def test_entry_point_registers_prefixed_nodes(pack_nodes):
    assert {"FastDiTCompare", "FastDiTTestModel"} <= set(pack_nodes)
    for node_id, cls in pack_nodes.items():
        schema = cls.GET_SCHEMA()
        assert node_id.startswith("FastDiT") and schema.node_id == node_id
        assert schema.category.startswith("FastDiT/"), (node_id, schema.category)
        assert schema.display_name, node_id


def test_package_defines_no_v1_mappings():
    # With NODE_CLASS_MAPPINGS present ComfyUI would never call comfy_entrypoint().
    tree = ast.parse(open(os.path.join(ROOT, "__init__.py")).read())
    names = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets
             if isinstance(t, ast.Name)}
    assert "NODE_CLASS_MAPPINGS" not in names
    assert "comfy_entrypoint" in open(os.path.join(ROOT, "__init__.py")).read()


def test_pyproject_is_read_by_comfy_registry_parser():
    from comfy_config import config_parser
    cfg = config_parser.extract_node_configuration(ROOT)
    assert cfg.project.name == "comfyui-fastdit"
    assert cfg.project.version
    assert cfg.tool_comfy.publisher_id
    assert cfg.tool_comfy.display_name == "FastDiT"
    import tomllib
    raw = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    # read by newer registry parsers; the oldest ComfyUI the suite runs on (make test)
    assert raw["tool"]["comfy"]["requires-comfyui"] == ">=0.3.75"


def test_requirements_do_not_pin_what_comfyui_brings():
    reqs = [l.split("#")[0].strip() for l in open(os.path.join(ROOT, "requirements.txt"))]
    names = {r.split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in reqs if r}
    assert not names & {"torch", "torchvision", "einops", "safetensors", "numpy", "triton"}


@pytest.mark.parametrize("node_id", ["FastDiTCompare", "FastDiTTestModel"])
def test_nodes_have_tooltips_on_widgets(pack_nodes, node_id):
    schema = pack_nodes[node_id].GET_SCHEMA()
    assert schema.description


def _pack_files_with_modules():
    """{file under the checkout: set of distinct module objects in sys.modules loaded from it}."""
    import sys
    root = os.path.realpath(ROOT)
    folders = tuple(os.path.join(root, d) + os.sep for d in ("fastdit", "kernels", "nodes", "demo", "bench"))
    seen = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and (os.path.realpath(path).startswith(folders) or os.path.realpath(path) == os.path.join(root, "__init__.py")):
            seen.setdefault(os.path.realpath(path), {})[id(module)] = module
    return seen


def test_one_module_object_per_file_and_class_identity(pack_nodes):
    import sys

    import fastdit.caching
    import kernels.forecast
    from fastdit.testing import comfy_env
    files = _pack_files_with_modules()
    assert len(files) > 30
    copies = {path: len(mods) for path, mods in files.items() if len(mods) > 1}
    # ComfyUI's loader executes the pack's __init__.py itself (one function, no state) under its folder
    # name; every module below it is the checkout's one copy.
    assert set(copies) <= {os.path.realpath(os.path.join(ROOT, "__init__.py"))}, copies
    hicache_node = pack_nodes["FastDiTHiCache"]
    assert hicache_node.execute.__func__.__globals__["apply_hicache"] is fastdit.caching.apply_hicache
    assert kernels.forecast.__name__ == "comfyui_fastdit.kernels.forecast"
    assert comfy_env.GraphError is sys.modules["comfyui_fastdit.fastdit.testing.comfy_env"].GraphError


def test_comfyui_loader_under_a_registry_folder_name_reuses_the_same_classes(pack_nodes, tmp_path):
    import asyncio

    import nodes
    link = tmp_path / "comfyui-fastdit"
    link.symlink_to(ROOT)
    assert asyncio.run(nodes.load_custom_node(str(link), module_parent="custom_nodes"))
    for node_id, cls in pack_nodes.items():
        assert nodes.NODE_CLASS_MAPPINGS[node_id] is cls


_FOREIGN_KERNELS = r"""
import asyncio, os, sys
fake = sys.argv[2]
os.makedirs(os.path.join(fake, "kernels"))
open(os.path.join(fake, "kernels", "__init__.py"), "w").write("raise ImportError('the PyPI kernels package')")
sys.path.insert(0, fake)            # a package named `kernels` ahead of everything, as a PyPI install would be
sys.path.insert(0, sys.argv[1])     # the ComfyUI root
from comfy.cli_args import args
args.cpu = True
import utils.extra_config  # noqa: F401
import nodes
asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
assert asyncio.run(nodes.load_custom_node(sys.argv[3], module_parent="custom_nodes"))
assert "FastDiTHiCache" in nodes.NODE_CLASS_MAPPINGS
pack = [m for n, m in sys.modules.items() if n.endswith(".kernels.tokens")]
assert pack and all(os.path.realpath(m.__file__).startswith(os.path.realpath(sys.argv[3])) for m in pack), pack
assert "kernels" not in sys.modules
print("LOADED", len([n for n in nodes.NODE_CLASS_MAPPINGS if n.startswith("FastDiT")]))
"""


def test_pack_loads_in_plain_comfyui_beside_a_foreign_kernels_package(tmp_path):
    """A user's ComfyUI (no checkout aliases): the pack's kernels are its own, never PyPI's `kernels`."""
    import subprocess
    import sys

    from conftest import PACK_NODES
    from fastdit.testing.comfy_env import comfyui_root
    link = tmp_path / "comfyui-fastdit"
    link.symlink_to(ROOT)
    proc = subprocess.run([sys.executable, "-c", _FOREIGN_KERNELS, comfyui_root(), str(tmp_path / "fake"), str(link)],
                          cwd=comfyui_root(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "LOADED" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert int(proc.stdout.split("LOADED")[1].split()[0]) == len(PACK_NODES)
