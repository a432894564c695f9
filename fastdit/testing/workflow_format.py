"""Convert between ComfyUI's UI workflow format (what users open) and the API format (/prompt).

ComfyUI has no backend converter; the frontend does it. These two functions follow the same rules
for plain graphs (no subgraphs, groups or frontend-only nodes besides Note/Reroute), so a test can
prove that a shared UI workflow and its API twin are the same graph, and new UI workflows can be
generated from an API graph:

    python -m fastdit.testing.workflow_format tests/workflows/x_api.json workflows/x.json
"""
import json

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


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
                         "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))}
    return out


def _ordered_inputs(info):
    spec = {}
    for group in ("required", "optional"):
        spec.update(info["input"].get(group, {}))
    order = info.get("input_order") or {}
    names = list(order.get("required", info["input"].get("required", {}))) + \
        list(order.get("optional", info["input"].get("optional", {})))
    return [(n, spec[n]) for n in names]


def _is_widget(spec):
    typ = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return False
    return isinstance(typ, list) or typ in WIDGET_TYPES


def _has_control(spec):
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] in ("INT", "FLOAT") and bool(opts.get("control_after_generate"))


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
            k += 2 if _has_control(spec) else 1
        entry = {"inputs": inputs, "class_type": node["type"]}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        graph[str(node["id"])] = entry
    return graph


def api_to_ui(graph, info, columns=4):
    """API graph -> a UI workflow (nodes laid out on a grid in id order)."""
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
    for pos, k in enumerate(ids):
        node = graph[k]
        spec = info[node["class_type"]]
        ordered = _ordered_inputs(spec)
        inputs, widgets = [], []
        for name, s in ordered:
            linked = (k, name) in link_by_target
            if _is_widget(s):
                val = node["inputs"].get(name, (s[1] or {}).get("default") if len(s) > 1 else None)
                widgets.append(None if linked else val)
                if _has_control(s):
                    widgets.append("fixed")
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
        entry = {"id": int(k), "type": node["class_type"], "pos": [60 + 380 * (pos % columns), 80 + 340 * (pos // columns)],
                 "size": [340, 260], "flags": {}, "order": pos, "mode": 0, "inputs": inputs, "outputs": outputs,
                 "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}
        if node.get("_meta", {}).get("title"):
            entry["title"] = node["_meta"]["title"]
        nodes.append(entry)
    return {"id": "00000000-0000-4000-8000-000000000000", "revision": 0, "last_node_id": max(int(k) for k in ids),
            "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def spec_out_type(spec, slot):
    return (spec.get("output") or [])[slot]


def main(argv=None):
    import argparse
    import os
    import sys
    ap = argparse.ArgumentParser(description="Write the UI-format twin of an API-format workflow.")
    ap.add_argument("api_json")
    ap.add_argument("ui_json")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    from fastdit.testing import comfy_env
    comfy_env.boot()
    with open(a.api_json) as f:
        graph = json.load(f)
    ui = api_to_ui(graph, object_info([n["class_type"] for n in graph.values()]))
    with open(a.ui_json, "w") as f:
        json.dump(ui, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
