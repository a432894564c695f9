"""The shipped workflows as a user meets them: the real ComfyUI frontend (pip package
comfyui-frontend-package), served by the real ComfyUI server (main.py) with this pack, in headless
Chromium driven by Playwright.

Every workflow of workflows/ is loaded in the UI and must open without a missing-node or error
dialog, with every widget showing the value its JSON stores, as the same graph as its API twin (the
frontend's own conversion), with no two nodes overlapping; it is then queued from the UI and must
finish without error, each Compare node showing its report on the canvas. A screenshot and a
template-sized thumbnail of each land in out/browser/<ComfyUI version>/.

Needs a `chromium` binary (Debian: `apt-get install chromium`; or FASTDIT_CHROMIUM=/path), the
playwright Python package and comfyui-frontend-package (`make env` installs both). Without them the
tests skip, unless FASTDIT_REQUIRE_BROWSER=1 (CI), where they fail.
"""
import glob
import importlib.util
import io
import json
import math
import os
import shutil
import time
import warnings

import pytest

from conftest import ROOT
from fastdit.testing.server import ComfyServer, execution_error

pytestmark = pytest.mark.server

WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
NAMES = [os.path.splitext(os.path.basename(p))[0] for p in WORKFLOWS]
PACK = "comfyui-fastdit"            # the folder name ComfyServer installs the pack under
VIEW = (1600, 1000)
MARGINS = (80, 180, 40, 60)         # left, top, right, bottom: the window's edges the frontend's panels cover
THUMB = 384                         # side of the square thumbnail, pixels
SHOT_SCALE = 0.8                    # zoom of the screenshots


def _browser_missing():
    reasons = []
    if not CHROMIUM:
        reasons.append("no chromium binary: `apt-get install chromium` (or set FASTDIT_CHROMIUM)")
    if importlib.util.find_spec("playwright") is None:
        reasons.append("no playwright Python package: `make env` installs it")
    if importlib.util.find_spec("comfyui_frontend_package") is None:
        reasons.append("no comfyui-frontend-package: `make env` installs it")
    return reasons


CHROMIUM = os.environ.get("FASTDIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def ui_server():
    missing = _browser_missing()
    if missing:
        message = "browser test: " + "; ".join(missing)
        if os.environ.get("FASTDIT_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (FASTDIT_REQUIRE_BROWSER=1)", pytrace=False)
        warnings.warn(f"skipped the {message}", UserWarning)     # listed in the summary of a -q run
        pytest.skip(message)
    srv = ComfyServer(frontend=True)
    settings = os.path.join(srv.base, "user", "default")
    os.makedirs(settings, exist_ok=True)
    with open(os.path.join(settings, "comfy.settings.json"), "w") as f:
        # a returning user: no template browser at start-up; no minimap over the canvas
        # full-detail nodes at any zoom in the screenshots
        json.dump({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False,
                   "LiteGraph.Canvas.MinFontSizeForLOD": 0}, f)
    srv.start()
    yield srv
    srv.cleanup()


class Page:
    """The frontend in a Chromium page, with what it logs."""

    def __init__(self, page, server):
        self.page, self.server, self.errors = page, server, []
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))

    def js(self, script, arg=None):
        return self.page.evaluate(script, arg)

    def dialogs(self):
        """Text of every visible dialog, error toast and error overlay (newer frontends report a
        missing node in an overlay, not a dialog)."""
        return self.js("""() => [...document.querySelectorAll(
                '[role=dialog], [role=alertdialog], .p-dialog, .p-toast-message-error, [data-testid=error-overlay]')]
            .filter(e => e.offsetParent !== null || e.getClientRects().length > 0)
            .map(e => e.innerText.trim().slice(0, 300))""")

    def load(self, workflow):
        self.js("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.page.wait_for_timeout(300)

    def nodes(self):
        """Every node of the graph: id, type, title, bounding box and the widgets the workflow saves."""
        return {n["id"]: n for n in self.js("""() => window.app.graph._nodes.map(n => {
            const b = n.getBounding ? n.getBounding() : n.boundingRect;
            return {id: Number(n.id), type: n.type, title: n.title, box: [b[0], b[1], b[2], b[3]],
                    widgets: (n.widgets || []).filter(w => w.serialize !== false)
                                              .map(w => [w.name, w.value === undefined ? null : w.value]),
                    report: (n.widgets || []).filter(w => w.name === 'fastdit_report').map(w => w.value)};
            })""")}

    def fit(self, scale=None):
        """Zoom (to `scale`, or so that the whole graph fits) and pan so that the graph sits in the
        part of the window the panels leave free; returns the graph's box on the page."""
        return self.js("""([fit, fixed]) => {
            const c = window.app.canvas, nodes = window.app.graph._nodes;
            const boxes = nodes.map(n => n.getBounding ? n.getBounding() : n.boundingRect);
            const x0 = Math.min(...boxes.map(b => b[0])), y0 = Math.min(...boxes.map(b => b[1]));
            const x1 = Math.max(...boxes.map(b => b[0] + b[2])), y1 = Math.max(...boxes.map(b => b[1] + b[3]));
            const r = c.canvas.getBoundingClientRect();
            const [fx0, fy0] = [fit[0], fit[1]], [fx1, fy1] = [innerWidth - fit[2], innerHeight - fit[3]];
            const scale = fixed || Math.min((fx1 - fx0) / (x1 - x0), (fy1 - fy0) / (y1 - y0));
            c.ds.scale = scale;
            c.ds.offset[0] = (fx0 - r.left) / scale - x0 + ((fx1 - fx0) / scale - (x1 - x0)) / 2;
            c.ds.offset[1] = (fy0 - r.top) / scale - y0 + ((fy1 - fy0) / scale - (y1 - y0)) / 2;
            c.setDirty(true, true);
            const sx = x => r.left + (x + c.ds.offset[0]) * scale, sy = y => r.top + (y + c.ds.offset[1]) * scale;
            return {x: sx(x0), y: sy(y0), width: sx(x1) - sx(x0), height: sy(y1) - sy(y0)};
        }""", [MARGINS, scale])

    def graph_size(self):
        return self.js("""() => {
            const boxes = window.app.graph._nodes.map(n => n.getBounding ? n.getBounding() : n.boundingRect);
            return [Math.max(...boxes.map(b => b[0] + b[2])) - Math.min(...boxes.map(b => b[0])),
                    Math.max(...boxes.map(b => b[1] + b[3])) - Math.min(...boxes.map(b => b[1]))];
        }""")


@pytest.fixture(scope="module")
def ui(ui_server):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": VIEW[0], "height": VIEW[1]})
            ui = Page(page, ui_server)
            page.goto(ui_server.url)
            page.wait_for_function("() => window.app && window.app.graph && window.app.vueAppReady", timeout=120_000)
            page.wait_for_timeout(500)
            yield ui
        finally:
            browser.close()


@pytest.fixture(scope="module")
def out_dir(ui_server):
    version = ui_server.get("/system_stats")["system"].get("comfyui_version", "unknown")
    path = os.path.join(ROOT, "out", "browser", version)
    os.makedirs(path, exist_ok=True)
    return path


def overlaps(boxes):
    """Pairs of (id, id) whose boxes [x, y, w, h] share area."""
    items = sorted(boxes.items())
    return [(a, b) for i, (a, (ax, ay, aw, ah)) in enumerate(items) for b, (bx, by, bw, bh) in items[i + 1:]
            if min(ax + aw, bx + bw) > max(ax, bx) and min(ay + ah, by + bh) > max(ay, by)]


def widget_mismatches(workflow, nodes):
    """(node id, widget, JSON value, value in the UI) for every widget whose value differs from the
    workflow's widgets_values (a missing or extra widget counts as a mismatch)."""
    found = []
    for node in workflow["nodes"]:
        widgets = nodes[node["id"]]["widgets"]
        stored = node.get("widgets_values", [])
        for i in range(max(len(stored), len(widgets))):
            name, shown = widgets[i] if i < len(widgets) else (f"#{i} (no widget)", None)
            want = stored[i] if i < len(stored) else "(not in the JSON)"
            same = (math.isclose(shown, want, rel_tol=1e-9, abs_tol=1e-9)
                    if isinstance(shown, (int, float)) and isinstance(want, (int, float)) else shown == want)
            if not same and want is not None:        # None: a widget converted to a linked input
                found.append((node["id"], name, want, shown))
    return found


def _strip(graph):
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in graph.items()}


def _wait_for_new_entry(server, known, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        hist = server.get("/history")
        done = [hist[k] for k in hist if k not in known and hist[k].get("status", {}).get("completed") is not None
                and hist[k]["status"].get("status_str") in ("success", "error")]
        if done:
            return done[0]
        if server.proc.poll() is not None:
            raise RuntimeError(f"ComfyUI died while running the workflow:\n{server.log()}")
        time.sleep(0.3)
    raise TimeoutError(f"the workflow queued from the UI did not finish in {timeout}s")


def save_shots(ui, name, out_dir):
    """Screenshot of the whole graph, and a square thumbnail of its results (the template browser's
    card); returns the text of every Compare report visible in the screenshot."""
    from PIL import Image
    width, height = ui.graph_size()
    # a window that holds the whole graph at SHOT_SCALE beside the frontend's panels
    ui.page.set_viewport_size({"width": max(VIEW[0], int(width * SHOT_SCALE) + MARGINS[0] + MARGINS[2] + 20),
                               "height": max(VIEW[1], int(height * SHOT_SCALE) + MARGINS[1] + MARGINS[3] + 20)})
    try:
        ui.page.wait_for_timeout(300)
        box = ui.fit(SHOT_SCALE)
        ui.page.wait_for_timeout(500)
        png = ui.page.screenshot(clip={k: box[k] for k in ("x", "y", "width", "height")})
        reports = ui.page.locator("textarea[data-fastdit-report]")
        shown = [reports.nth(i).input_value() for i in range(reports.count()) if reports.nth(i).is_visible()]
    finally:
        ui.page.set_viewport_size({"width": VIEW[0], "height": VIEW[1]})
    with open(os.path.join(out_dir, f"{name}.png"), "wb") as f:
        f.write(png)
    # the thumbnail: the results (saved images, Compare reports), at most a square from their top
    boxes = [n["box"] for n in ui.nodes().values()]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    outputs = [n["box"] for n in ui.nodes().values() if n["type"] in ("SaveImage", "PreviewImage", "FastDiTCompare")]
    left, top = (min(b[i] for b in outputs) for i in (0, 1))
    right, bottom = (max(b[i] + b[i + 2] for b in outputs) for i in (0, 1))
    px = lambda v, origin: max(0, int((v - origin) * SHOT_SCALE))  # noqa: E731
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    crop = (px(left, x0), px(top, y0), px(right, x0), px(bottom, y0))
    crop = crop[:3] + (min(crop[3], crop[1] + crop[2] - crop[0]),)
    shot = shot.crop(crop)
    side = max(shot.size)
    square = Image.new("RGB", (side, side), (32, 32, 32))
    square.paste(shot, ((side - shot.width) // 2, (side - shot.height) // 2))
    square.resize((THUMB, THUMB), Image.LANCZOS).save(os.path.join(out_dir, f"{name}.jpg"), quality=85)
    return shown


def test_the_pack_extension_is_loaded(ui):
    names = ui.js("() => (window.app.extensions || []).map(e => e.name)")
    assert "FastDiT.CompareReport" in names
    assert not [e for e in ui.errors if PACK in e]


@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_and_runs_in_the_frontend(ui, name, out_dir):
    with open(os.path.join(ROOT, "workflows", f"{name}.json")) as f:
        workflow = json.load(f)
    with open(os.path.join(ROOT, "tests", "workflows", f"{name}_api.json")) as f:
        twin = json.load(f)
    ui.load(workflow)
    assert ui.dialogs() == [], f"{name}: the frontend shows a dialog on loading"
    nodes = ui.nodes()
    assert sorted(nodes) == sorted(n["id"] for n in workflow["nodes"])
    assert widget_mismatches(workflow, nodes) == []
    prompt = ui.js("async () => (await window.app.graphToPrompt()).output")
    assert _strip(prompt) == _strip(twin), f"{name}: the frontend makes a different graph of it than its API twin"
    assert overlaps({i: n["box"] for i, n in nodes.items()}) == []
    notes = [n for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 80, f"{name}: no note says what it shows"

    known = set(ui.server.get("/history"))
    ui.js("async () => { await window.app.queuePrompt(0); }")
    entry = _wait_for_new_entry(ui.server, known)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    assert _strip(entry["prompt"][2]) == _strip(twin)                # what ran is the API twin
    ui.page.wait_for_timeout(500)
    assert ui.dialogs() == [], f"{name}: the frontend shows a dialog after the run"

    after = ui.nodes()
    assert widget_mismatches(workflow, after) == []                   # "fixed" controls kept every seed
    assert overlaps({i: n["box"] for i, n in after.items()}) == []     # image previews and reports included
    compares = sorted(int(k) for k, v in twin.items() if v["class_type"] == "FastDiTCompare")
    assert compares, f"{name}: no Compare node shows the fidelity of the result"
    for node_id in compares:
        report = entry["outputs"][str(node_id)]["text"][0]
        assert report.startswith("PSNR ") and "SSIM " in report
        assert after[node_id]["report"] == [report]

    texts = save_shots(ui, name, out_dir)       # the reports visible in the screenshot
    assert sorted(texts) == sorted(entry["outputs"][str(i)]["text"][0] for i in compares), \
        "every Compare report is visible on the canvas"
    assert not [e for e in ui.errors if PACK in e]


def test_missing_node_is_reported_by_a_dialog(ui):
    """The dialog check above can fail: a workflow with a node type nobody installed opens one."""
    with open(WORKFLOWS[0]) as f:
        workflow = json.load(f)
    broken = json.loads(json.dumps(workflow))
    broken["nodes"][0]["type"] = "FastDiTNoSuchNode"
    ui.load(broken)
    try:
        shown = ui.dialogs()
        assert shown and any("FastDiTNoSuchNode" in text for text in shown), shown
    finally:
        ui.page.keyboard.press("Escape")
        ui.page.wait_for_timeout(300)
        ui.load(workflow)
    assert ui.dialogs() == []


def test_widget_check_sees_a_shifted_value(ui):
    """The widget check can fail: a seed control value the frontend expects but the JSON lacks
    shifts every later value of the node."""
    from fastdit.testing import workflow_format
    with open(os.path.join(ROOT, "workflows", "hicache_flux.json")) as f:
        workflow = json.load(f)
    sampler = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
    del sampler["widgets_values"][1]                                   # the "fixed" after the seed
    ui.load(workflow)
    found = widget_mismatches(workflow, ui.nodes())
    assert found and {f[0] for f in found} == {sampler["id"]}
    assert workflow_format.control_values("seed", ["INT", {}]) == ["fixed"]


def test_converter_follows_the_frontends_control_widget_rules(ui):
    """api_to_ui stores a control value exactly where the frontend makes a control widget: after an
    INT named seed / noise_seed unless the spec turns it off, after any INT or combo that turns it
    on, and nowhere else. Checked on a node type defined in the page with every case."""
    from fastdit.testing import workflow_format
    spec = {"input": {"required": {
        "seed": ["INT", {"default": 1}], "noise_seed": ["INT", {"default": 2}],
        "my_seed": ["INT", {"default": 3}], "other": ["INT", {"default": 4, "control_after_generate": True}],
        "count": ["INT", {"default": 5}], "ratio": ["FLOAT", {"default": 0.5}],
        "choice": [["a", "b"], {"default": "b", "control_after_generate": True}]}},
        "input_order": {"required": ["seed", "noise_seed", "my_seed", "other", "count", "ratio", "choice"]},
        "output": ["INT"], "output_name": ["out"], "name": "FastDiTProbe", "display_name": "probe",
        "category": "FastDiT/testing", "output_node": False, "description": "", "python_module": "nodes"}
    spec_off = json.loads(json.dumps(spec))
    spec_off["input"]["required"]["seed"] = ["INT", {"default": 1, "control_after_generate": False}]
    spec_off["name"] = "FastDiTProbeOff"
    for node_def in (spec, spec_off):
        ui.js("async (d) => { await window.app.registerNodeDef(d.name, d); }", node_def)
    for node_def in (spec, spec_off):
        values = {"seed": 11, "noise_seed": 12, "my_seed": 13, "other": 14, "count": 15, "ratio": 0.25, "choice": "a"}
        api = {"1": {"class_type": node_def["name"], "inputs": values}}
        workflow = workflow_format.api_to_ui(api, {node_def["name"]: node_def})
        ui.load(workflow)
        shown = ui.nodes()[1]["widgets"]
        assert widget_mismatches(workflow, {1: {"widgets": shown}}) == [], (node_def["name"], shown)
        seed = [11, "fixed"] if node_def is spec else [11]
        assert [v for _, v in shown] == seed + [12, "fixed", 13, 14, "fixed", 15, 0.25, "a", "fixed", ""]
        assert workflow_format.ui_to_api(workflow, {node_def["name"]: node_def})["1"]["inputs"] == api["1"]["inputs"]


def test_templates_list_every_workflow_with_its_thumbnail(ui, out_dir):
    """ComfyUI serves the pack's workflows/ as its templates; the frontend's template browser lists
    them with the thumbnail beside each (workflows/<name>.jpg)."""
    assert sorted(ui.server.get("/workflow_templates")[PACK]) == NAMES
    for name in NAMES:
        assert os.path.getsize(os.path.join(ROOT, "workflows", f"{name}.jpg")) < 100_000
    fetched = {}
    ui.page.on("response", lambda r: fetched.__setitem__(r.url.rsplit("/", 1)[-1], r.status)
               if f"/workflow_templates/{PACK}/" in r.url else None)
    ui.js("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    try:
        ui.page.wait_for_function("""(n) => [...document.querySelectorAll('[role=dialog] img')]
                                         .filter(i => i.complete && i.naturalWidth > 0).length >= n""",
                                  arg=len(NAMES), timeout=30_000)
        assert {f"{name}.jpg": 200 for name in NAMES}.items() <= fetched.items(), fetched
        ui.page.wait_for_timeout(300)
        ui.page.screenshot(path=os.path.join(out_dir, "templates.png"))
    finally:
        ui.page.keyboard.press("Escape")
        ui.page.wait_for_timeout(300)
