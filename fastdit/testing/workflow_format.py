"""Convert between ComfyUI's UI workflow format (what users open) and the API format (/prompt).

ComfyUI has no backend converter; the frontend does it. These two functions follow the same rules
for plain graphs (no subgraphs, groups or frontend-only nodes besides Note/MarkdownNote/Reroute), so
a test can prove that a shared UI workflow and its API twin are the same graph, and new UI workflows
can be generated from an API graph:

    python -m fastdit.testing.workflow_format tests/workflows/x_api.json workflows/x.json [--note TEXT]

The frontend's rules followed here (ComfyUI frontend, `useIntWidget` / `addComboWidget`):
- an input is a widget when its type is INT, FLOAT, STRING, BOOLEAN or a combo, unless forceInput;
- a widget's value is stored in the node's `widgets_values` in input order (required, optional);
- an INT input gets a "control after generate" widget right after it when its spec says
  `control_after_generate: true`, or, when the spec does not say, when it is named `seed` or
  `noise_seed`; its value ("fixed", "increment", "decrement", "randomize") follows the seed's in
  `widgets_values` and is not sent to the server;
- a combo with `control_after_generate: true` gets that widget and a filter-list text widget.

The generated UI workflow places the nodes in columns, the graph's ends (outputs) right, each node
in the row of the node it feeds, sized so that no two nodes overlap in the frontend, under a
MarkdownNote that says what the workflow shows.
"""
import json

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
NOTE_TYPES = ("MarkdownNote", "Note")
IMPLICIT_CONTROL = ("seed", "noise_seed")

# Frontend geometry (LiteGraph): a node's title bar sits above its pos; slots and widgets stack below.
TITLE_H = 30
SLOT_H = 20
WIDGET_H = 24
MULTILINE_H = 110
CHAR_W = 7.5
# Room a node needs beyond its inputs and widgets: image previews after a run, the Compare report.
EXTRA_H = {"SaveImage": 220, "PreviewImage": 220, "FastDiTCompare": 110}
GAP_X, GAP_Y = 70, 40


def object_info(names=None):
    """{node_id: info} as GET /object_info returns it, built from the in-process node registry."""
    import nodes
    out = {}
    for name in names or nodes.NODE_CLASS_MAPPINGS:
        cls = nodes.NODE_CLASS_MAPPINGS[name]
        if hasattr(cls, "GET_NODE_INFO_V1"):
            out[name] = cls.GET_NODE_INFO_V1()
        else:
            types = cls.INPUT_TYPES()
            out[name] = {"input": types, "input_order": {k: list(v) for k, v in types.items()},
                         "output": list(cls.RETURN_TYPES),
                         "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
                         "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name)}
    return out


def _ordered_inputs(info):
    spec = {}
    for group in ("required", "optional"):
        spec.update(info["input"].get(group, {}))
    order = info.get("input_order") or {}
    names = list(order.get("required", info["input"].get("required", {}))) + \
        list(order.get("optional", info["input"].get("optional", {})))
    return [(n, spec[n]) for n in names]


def _opts(spec):
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _is_combo(spec):
    return isinstance(spec[0], list) or spec[0] == "COMBO"


def _is_widget(spec):
    if _opts(spec).get("forceInput"):
        return False
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def control_values(name, spec):
    """The frontend-only values stored in `widgets_values` right after this widget's value (as the
    UI saves them with the control set to "fixed")."""
    flag = _opts(spec).get("control_after_generate")
    if spec[0] == "INT":
        on = flag if flag is not None else name in IMPLICIT_CONTROL
        return ["fixed"] if on else []
    if _is_combo(spec) and flag:
        return ["fixed", ""]
    return []


def ui_to_api(ui, info):
    """UI workflow dict -> API graph dict, using `info` (object_info) for widget order."""
    links = {l[0]: (l[1], l[2]) for l in ui["links"]}
    by_id = {n["id"]: n for n in ui["nodes"]}

    def source(link_id):
        node_id, slot = links[link_id]
        node = by_id[node_id]
        if node["type"] == "Reroute":
            return source(node["inputs"][0]["link"])
        return [str(node_id), slot]

    graph = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}) is muted or bypassed; not supported here")
        if node["type"] not in info:
            raise KeyError(f"node type {node['type']} is not installed")
        inputs = {}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                inputs[inp["name"]] = source(inp["link"])
        values = list(node.get("widgets_values", []))
        k = 0
        for name, spec in _ordered_inputs(info[node["type"]]):
            if not _is_widget(spec):
                continue
            if k >= len(values):
                break
            if name not in inputs:
                inputs[name] = values[k]
            k += 1 + len(control_values(name, spec))
        entry = {"inputs": inputs, "class_type": node["type"]}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        graph[str(node["id"])] = entry
    return graph


def _node_size(title, spec, widgets, n_slots, class_type):
    """A size at least the frontend's own minimum for this node (LGraphNode.computeSize)."""
    width = max(320, CHAR_W * len(title) + 70)
    height = SLOT_H * n_slots + 16 + EXTRA_H.get(class_type, 0)
    for name, s, value in widgets:
        multiline = _opts(s).get("multiline")
        height += MULTILINE_H if multiline else WIDGET_H * (1 + len(control_values(name, s)))
        if not multiline:
            width = max(width, CHAR_W * (len(name) + len(str(value))) + 90)
    return [int(round(width, -1)), int(round(height + 9, -1))]


def _note_size(text):
    lines = sum(max(1, -(-len(line) // 80)) for line in text.split("\n"))
    return [620, 40 + 22 * lines]


def _layout(graph, sizes, top):
    """pos of every node: a node's column is set by its longest path to the graph's ends (the nodes
    nothing reads from are in the last column); columns are filled right to left, each node in the
    row of its first reader, below the nodes above it."""
    sources = {k: [v[0] for v in graph[k]["inputs"].values() if isinstance(v, list)] for k in graph}
    readers = {k: [r for r in graph if k in sources[r]] for k in graph}
    height = {}

    def rank(k):  # longest path to a node nothing reads from
        if k not in height:
            height[k] = 1 + max((rank(r) for r in readers[k]), default=-1)
        return height[k]

    last = max(rank(k) for k in graph)
    columns = {}
    for k in sorted(graph, key=int):
        columns.setdefault(last - rank(k), []).append(k)
    widths = {c: max(sizes[k][0] for k in ks) for c, ks in columns.items()}
    xs, x = {}, 60
    for c in sorted(columns):
        xs[c] = x
        x += widths[c] + GAP_X
    pos = {}
    for c in sorted(columns, reverse=True):
        targets = {k: min((pos[r][1] for r in readers[k] if r in pos), default=top) for k in columns[c]}
        y_free = top
        for k in sorted(columns[c], key=lambda k: (targets[k], int(k))):
            y = max(y_free, targets[k])
            pos[k] = [xs[c], y]
            y_free = y + sizes[k][1] + TITLE_H + GAP_Y
    return pos


def api_to_ui(graph, info, note=None):
    """API graph -> a UI workflow, laid out (see _layout), with `note` as a MarkdownNote on top."""
    ids = sorted(graph, key=lambda k: int(k))
    nodes, links = [], []
    out_links = {k: {} for k in ids}
    link_id = 0
    pending = []
    for k in ids:
        spec = info[graph[k]["class_type"]]
        for name, val in graph[k]["inputs"].items():
            if isinstance(val, list):
                link_id += 1
                src, slot = val
                out_type = spec_out_type(info[graph[src]["class_type"]], slot)
                links.append([link_id, int(src), slot, int(k), None, out_type])
                out_links[src].setdefault(slot, []).append(link_id)
                pending.append((link_id, k, name))
    link_by_target = {(k, name): lid for lid, k, name in pending}
    sizes = {}
    for k in ids:
        node = graph[k]
        spec = info[node["class_type"]]
        ordered = _ordered_inputs(spec)
        inputs, widgets, shown = [], [], []
        for name, s in ordered:
            linked = (k, name) in link_by_target
            if _is_widget(s):
                val = None if linked else node["inputs"].get(name, _opts(s).get("default"))
                widgets.append(val)
                widgets.extend(control_values(name, s))
                shown.append((name, s, val))
                if linked:
                    inputs.append({"name": name, "type": s[0] if isinstance(s[0], str) else "COMBO",
                                   "widget": {"name": name}, "link": link_by_target[(k, name)]})
            else:
                inputs.append({"name": name, "type": s[0], "link": link_by_target.get((k, name))})
        for i, inp in enumerate(inputs):
            lid = inp["link"]
            if lid is not None:
                links[lid - 1][4] = i
        outputs = [{"name": (spec.get("output_name") or spec["output"])[i], "type": t,
                    "links": out_links[k].get(i, [])} for i, t in enumerate(spec.get("output") or [])]
        title = node.get("_meta", {}).get("title") or spec.get("display_name") or node["class_type"]
        n_slots = max(len([i for i in inputs if "widget" not in i]), len(outputs))
        sizes[k] = _node_size(title, spec, shown, n_slots, node["class_type"])
        entry = {"id": int(k), "type": node["class_type"], "pos": None, "size": sizes[k], "flags": {},
                 "order": len(nodes), "mode": 0, "inputs": inputs, "outputs": outputs,
                 "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}
        if node.get("_meta", {}).get("title"):
            entry["title"] = node["_meta"]["title"]
        nodes.append(entry)
    top, last_id = 60, max(int(k) for k in ids)
    if note:
        last_id += 1
        size = _note_size(note)
        nodes.append({"id": last_id, "type": "MarkdownNote", "pos": [60, top + TITLE_H], "size": size,
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [],
                      "title": "About this workflow", "properties": {}, "widgets_values": [note],
                      "color": "#432", "bgcolor": "#653"})
        top += TITLE_H + size[1] + GAP_Y
    pos = _layout(graph, sizes, top + TITLE_H)
    for entry in nodes:
        if entry["pos"] is None:
            entry["pos"] = pos[str(entry["id"])]
    return {"id": "00000000-0000-4000-8000-000000000000", "revision": 0, "last_node_id": last_id,
            "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def note_of(ui):
    """The text of a UI workflow's first Note / MarkdownNote, or None."""
    for node in ui.get("nodes", []):
        if node["type"] in NOTE_TYPES and node.get("widgets_values"):
            return node["widgets_values"][0]
    return None


def spec_out_type(spec, slot):
    return (spec.get("output") or [])[slot]


def main(argv=None):
    import argparse
    import os
    import sys
    ap = argparse.ArgumentParser(description="Write the UI-format twin of an API-format workflow.")
    ap.add_argument("api_json")
    ap.add_argument("ui_json")
    ap.add_argument("--note", help="text of the workflow's MarkdownNote (default: keep the note of an "
                                   "existing ui_json)")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    from fastdit.testing import comfy_env
    comfy_env.boot()
    with open(a.api_json) as f:
        graph = json.load(f)
    note = a.note
    if note is None and os.path.exists(a.ui_json):
        with open(a.ui_json) as f:
            note = note_of(json.load(f))
    ui = api_to_ui(graph, object_info([n["class_type"] for n in graph.values()]), note=note)
    with open(a.ui_json, "w") as f:
        json.dump(ui, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
