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
    assert raw["tool"]["comfy"]["requires-comfyui"].startswith(">=")  # read by newer registry parsers


def test_requirements_do_not_pin_what_comfyui_brings():
    reqs = [l.split("#")[0].strip() for l in open(os.path.join(ROOT, "requirements.txt"))]
    names = {r.split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in reqs if r}
    assert not names & {"torch", "torchvision", "einops", "safetensors", "numpy", "triton"}


@pytest.mark.parametrize("node_id", ["FastDiTCompare", "FastDiTTestModel"])
def test_nodes_have_tooltips_on_widgets(pack_nodes, node_id):
    schema = pack_nodes[node_id].GET_SCHEMA()
    assert schema.description
