"""What the repository says about itself holds: it cites nothing outside itself, its links resolve,
and it presents only nodes that exist."""
import os
import re
import subprocess
import tomllib

import pytest

from conftest import ROOT

TEXT_SUFFIXES = (".py", ".md", ".toml", ".sh", ".json", ".txt")
# The test harness may read ComfyUI source archives from a configurable folder: those are fixtures.
SKIPPED = {"LICENSE", "scripts/setup_versions.sh", "Makefile"}
OUTSIDE_NOTES = ("ALGORITHMS", "COMFY_INTERNALS", "ANCHORS", "RUNTIME_NOTES", "ARCHITECTURE", "DEVELOPERS")
# A note cited by file name or by section ("NAME.md", "NAME §3.5"); a path into the folder beside the
# checkout. Written so that this file does not match itself.
OUTSIDE_REF = re.compile(r"\b(?:" + "|".join(OUTSIDE_NOTES) + r")(?:\.md\b|\s*\u00a7)"
                         + r"|\.\./" + "shared" + r"\b")
PLANNED = ("SVD-Cache", "SpecEdit")


def _tracked():
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in out.splitlines() if os.path.isfile(os.path.join(ROOT, p))]


def _read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def _docs():
    return ["README.md"] + sorted(p for p in _tracked() if re.fullmatch(r"docs/[^/]+\.md", p))


def outside_references(rel, text):
    """(line number, line) of each reference to a file outside the repository. A fixture default
    is allowed where the line names the variable that configures it (COMFYUI_ARCHIVES)."""
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if OUTSIDE_REF.search(line) and "COMFYUI_ARCHIVES" not in line]


def test_the_scan_catches_the_forms_of_an_outside_reference():
    md = ".md"
    for line in ("see ALGORITHMS \u00a73.5", "(COMFY_INTERNALS \u00a72.6)", "ANCHORS" + md + " \u00a74",
                 "in DEVELOPERS" + md, "cat ../" + "shared/reference/x", "ARCHITECTURE" + md, "RUNTIME_NOTES" + md):
        assert outside_references("x.py", line), line
    for line in ("Fresco, arXiv 2601.07462", "comfy/ldm/flux/model.py", "shared workflows",
                 'ARCHIVES=${COMFYUI_ARCHIVES:-../' + 'shared/comfyui}'):
        assert not outside_references("x.py", line), line


def test_no_file_refers_to_files_outside_the_repository():
    files = [p for p in _tracked() if p.endswith(TEXT_SUFFIXES) and p not in SKIPPED]
    assert "README.md" in files and any(p.startswith("fastdit/") for p in files)
    found = [f"{rel}:{n}: {line}" for rel in files for n, line in outside_references(rel, _read(rel))]
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def _links(text):
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)     # no links inside code blocks
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


def test_relative_markdown_links_point_at_files_of_the_repository():
    tracked = set(_tracked())
    checked = 0
    for rel in _docs():
        for target in _links(_read(rel)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue                                         # URLs and in-page anchors
            path = os.path.normpath(os.path.join(os.path.dirname(rel), target.split("#")[0])).replace(os.sep, "/")
            assert not path.startswith(".."), f"{rel}: {target} leaves the repository"
            assert path in tracked or any(t.startswith(path + "/") for t in tracked), f"{rel}: {target} does not exist"
            checked += 1
    assert checked >= 10                                         # the README and docs do link their files


def test_documented_node_ids_are_registered(pack_nodes):
    table = re.findall(r"^\| `(\w+)` \|", _read("README.md"), re.M)
    assert len(table) >= 8
    assert set(table) <= set(pack_nodes), sorted(set(table) - set(pack_nodes))
    for rel in _docs():
        ids = set(re.findall(r"\bFastDiT[A-Z]\w*", _read(rel)))
        assert ids <= set(pack_nodes), (rel, sorted(ids - set(pack_nodes)))


def _sentences(text):
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.split(r"(?<=[.!?])\s+|\n\s*\n|\n\s*[-*|] ", text)


def test_planned_techniques_are_never_presented_as_existing(pack_nodes):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    texts = {"pyproject.toml description": project["description"]}
    texts.update({rel: _read(rel) for rel in _docs()})
    for name in PLANNED:
        if any(name.replace("-", "").lower() in node.lower() for node in pack_nodes):
            continue                                             # it exists now: no longer planned
        for where, text in texts.items():
            for sentence in _sentences(text):
                if name in sentence:
                    assert re.search(r"\bplanned\b", sentence), f"{where}: {' '.join(sentence.split())}"
