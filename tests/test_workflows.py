"""Every shared UI workflow is the same graph as its API twin, which the server tests execute."""
import glob
import json
import os

import pytest

from conftest import ROOT
from fastdit.testing import workflow_format

UI_FILES = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))


def test_there_are_shared_workflows():
    assert UI_FILES


@pytest.mark.parametrize("path", UI_FILES, ids=os.path.basename)
def test_ui_workflow_matches_api_twin(path):
    name = os.path.splitext(os.path.basename(path))[0]
    twin_path = os.path.join(ROOT, "tests", "workflows", f"{name}_api.json")
    assert os.path.exists(twin_path), f"{name}.json has no API twin tests/workflows/{name}_api.json"
    ui = json.load(open(path))
    twin = json.load(open(twin_path))
    info = workflow_format.object_info()
    api = workflow_format.ui_to_api(ui, info)
    strip = lambda g: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in g.items()}  # noqa: E731
    assert strip(api) == strip(twin)


@pytest.mark.parametrize("path", UI_FILES, ids=os.path.basename)
def test_ui_workflow_links_are_consistent(path):
    ui = json.load(open(path))
    nodes = {n["id"]: n for n in ui["nodes"]}
    for lid, src, sslot, dst, dslot, typ in ui["links"]:
        assert lid in nodes[src]["outputs"][sslot]["links"]
        assert nodes[dst]["inputs"][dslot]["link"] == lid
        assert nodes[src]["outputs"][sslot]["type"] == typ
