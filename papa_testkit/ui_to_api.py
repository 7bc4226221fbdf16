"""Convert a UI-format workflow into the API format, the way the ComfyUI frontend does, using /object_info.

Widget values are consumed in the order of each node's declared inputs; an INT with
``control_after_generate`` (seeds) is followed by one extra value (randomize/fixed/...).
Nodes with mode 2 (muted) or 4 (bypassed) are left out.
"""
from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def to_api(workflow: dict, object_info: dict) -> dict:
    links = {l[0]: l for l in workflow["links"]}
    api = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4):
            continue
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs = {}
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                typ = spec[0]
                opts = spec[1] if len(spec) > 1 else {}
                is_widget = isinstance(typ, list) or typ in WIDGET_TYPES
                if name in linked:
                    l = linked[name]
                    inputs[name] = [str(l[1]), l[2]]
                    if is_widget and values:
                        values.pop(0)
                elif is_widget:
                    inputs[name] = values.pop(0)
                    if opts.get("control_after_generate"):
                        values.pop(0)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api
