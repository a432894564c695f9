"""The pack as the Comfy Registry lists and ships it.

`comfy node pack` / `comfy node publish` (comfy-cli, comfy_cli/file_utils.py `zip_files`) archive
the git-tracked files, drop those matching a pattern of `.comfyignore` (gitignore syntax), and add
the folders named in `[tool.comfy] includes` from disk (those are exempt from `.comfyignore`).
`archive_files` below applies the same rules; it implements the part of the gitignore syntax that
`.comfyignore` uses and refuses patterns beyond it, so the two cannot drift apart silently.
"""
import ast
import os
import re
import subprocess
import tomllib

import pytest

from conftest import ROOT

SHIPPED_TOP_LEVEL = {"__init__.py", "nodes", "fastdit", "kernels", "demo", "workflows", "web", "README.md", "LICENSE",
                     "pyproject.toml", "requirements.txt", "icon.svg"}
ISSUES_URL = "https://github.com/fastdit/ComfyUI-FastDiT/issues"


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _ignore_patterns():
    path = os.path.join(ROOT, ".comfyignore")
    if not os.path.exists(path):
        return []
    lines = [line.strip() for line in open(path, encoding="utf-8")]
    return [line for line in lines if line and not line.startswith("#")]


def _ignored(rel_path, patterns):
    """gitignore matching for literal patterns: a leading or inner '/' anchors the pattern at the
    root, a trailing '/' matches a directory (so everything under it); otherwise any path component
    sequence may match."""
    for pattern in patterns:
        if re.search(r"[*?\[\]!\\]", pattern):
            raise AssertionError(f".comfyignore pattern {pattern!r} uses syntax this test does not implement")
        directory = pattern.endswith("/")
        body = pattern.strip("/")
        anchored = pattern.startswith("/") or "/" in body
        parts = rel_path.split("/")
        starts = [0] if anchored else range(len(parts))
        n = len(body.split("/"))
        for i in starts:
            if parts[i:i + n] == body.split("/") and (not directory or i + n < len(parts)):
                return True
    return False


def archive_files():
    try:
        tracked = subprocess.run(["git", "-C", ROOT, "ls-files"], capture_output=True, text=True,
                                 check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the registry archive is built from git-tracked files")
    patterns = _ignore_patterns()
    includes = _pyproject()["tool"]["comfy"].get("includes", [])
    prefixes = [os.path.normpath(i.lstrip("/")).replace(os.sep, "/") for i in includes]

    def forced(p):
        return any(p == q or p.startswith(q + "/") for q in prefixes)

    files = {p for p in tracked if os.path.exists(os.path.join(ROOT, p)) and (forced(p) or not _ignored(p, patterns))}
    for prefix in prefixes:
        for dirpath, _, names in os.walk(os.path.join(ROOT, prefix)):
            files |= {os.path.relpath(os.path.join(dirpath, n), ROOT).replace(os.sep, "/") for n in names}
    return files


def test_ignore_rule_matches_gitignore_semantics():
    assert _ignored("tests/test_x.py", ["/tests/"])
    assert not _ignored("tests", ["/tests/"])                    # a directory pattern needs a directory
    assert not _ignored("fastdit/tests/x.py", ["/tests/"])       # anchored at the root
    assert _ignored("fastdit/tests/x.py", ["tests/"])            # unanchored: any depth
    assert _ignored("Makefile", ["/Makefile"]) and not _ignored("demo/Makefile", ["/Makefile"])
    assert not _ignored("testsuite/x.py", ["/tests/"])           # whole components only
    with pytest.raises(AssertionError, match="does not implement"):
        _ignored("x.py", ["*.py"])


def test_archive_holds_what_a_user_needs_and_nothing_else():
    files = archive_files()
    top = {p.split("/")[0] for p in files}
    for needed in ("__init__.py", "README.md", "LICENSE", "pyproject.toml", "requirements.txt", "icon.svg"):
        assert needed in files, needed
    for folder in ("nodes", "fastdit", "workflows", "demo"):
        assert any(p.startswith(folder + "/") and p.endswith((".py", ".json")) for p in files), folder
    assert {"demo/weights/demo_flux.safetensors", "demo/weights/demo_kontext.safetensors"} <= files
    # the frontend extension (WEB_DIRECTORY) and every workflow's template thumbnail
    assert "web/compare_report.js" in files
    workflows = [p for p in files if p.startswith("workflows/") and p.endswith(".json")]
    assert workflows and all(p[:-len(".json")] + ".jpg" in files for p in workflows)
    for left_out in ("tests", "bench", "docs", ".ci", "scripts"):
        assert not any(p.startswith(left_out + "/") for p in files), left_out
    assert top <= SHIPPED_TOP_LEVEL, sorted(top - SHIPPED_TOP_LEVEL)


def _module_file(parts):
    base = os.path.join(ROOT, *parts)
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if parts and os.path.isfile(candidate):
            return os.path.relpath(candidate, ROOT).replace(os.sep, "/")
    return None


def _imported_files(path):
    """The pack's files that `path` imports, lazily or not (parent packages included)."""
    package = path.split("/")[:-1]
    for node in ast.walk(ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            targets = [module] + [module + [alias.name] for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        else:
            continue
        for target in targets:
            for i in range(1, len(target) + 1):
                found = _module_file(target[:i])
                if found:
                    yield found


def pack_import_closure():
    """Every file of the repository that loading the pack can import, starting at __init__.py."""
    seen, todo = set(), ["__init__.py"]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_imported_files(path))
    return seen


def test_everything_the_pack_imports_ships():
    closure = pack_import_closure()
    # the walk reaches through nodes/ into the library, the kernels and the demo models
    assert {"nodes/__init__.py", "nodes/hicache.py", "fastdit/dynres/fresco.py", "fastdit/caching/config.py",
            "demo/models.py"} <= closure
    assert any(p.endswith("forecast.py") and "kernels/" in p for p in closure)
    missing = closure - archive_files()
    assert not missing, f"imported by the pack but left out of the registry archive: {sorted(missing)}"


def test_registry_parser_reads_urls_icon_and_classifiers():
    from comfy_config import config_parser
    cfg = config_parser.extract_node_configuration(ROOT)
    assert cfg.project.urls.issues == ISSUES_URL                # the key the parser reads is "Issues"
    assert cfg.project.urls.repository and cfg.project.urls.documentation
    icon = cfg.tool_comfy.icon
    assert icon.startswith("https://") and icon.endswith(".svg")
    assert icon.startswith("https://raw.githubusercontent.com/fastdit/ComfyUI-FastDiT/main/")
    assert icon.split("/main/", 1)[1] in archive_files()        # the icon is a file of the pack
    assert cfg.project.supported_accelerators == ["GPU :: NVIDIA CUDA"]
    assert cfg.project.supported_os == ["OS Independent"]


def test_icon_is_a_square_svg_within_the_registry_limits():
    text = open(os.path.join(ROOT, "icon.svg"), encoding="utf-8").read()
    assert text.lstrip().startswith("<svg")
    w, h = (int(re.search(rf'\b{k}="(\d+)"', text).group(1)) for k in ("width", "height"))
    assert w == h and w <= 400                                   # registry: at most 800 x 400


def test_license_is_gpl3_and_pyproject_says_so():
    text = open(os.path.join(ROOT, "LICENSE"), encoding="utf-8").read()
    assert text.split("\n", 2)[:2] == ["                    GNU GENERAL PUBLIC LICENSE",
                                       "                       Version 3, 29 June 2007"]
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 30000   # the full text, not a notice
    from comfy_config import config_parser
    assert config_parser.extract_node_configuration(ROOT).project.license.text == "GPL-3.0-only"
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert re.search(r"^## License\n\nGPL-3\.0 ", readme, re.M)
