"""Write example_workflows/papa_loop.json (ComfyUI's UI format) from the nodes' own declarations.

    python -m tools.make_example_workflow

Widget values follow each node's INPUT_TYPES order (plus the seed's control_after_generate value),
which is how the ComfyUI frontend reads them, so the file cannot drift from the nodes.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"


def papa_classes():
    comfy = types.ModuleType("comfy")
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSampler = type("KSampler", (), {"SAMPLERS": ["euler", "euler_ancestral", "dpmpp_2m"],
                                              "SCHEDULERS": ["normal", "karras"]})
    comfy.samplers = samplers
    sys.modules.setdefault("comfy", comfy)
    sys.modules.setdefault("comfy.samplers", samplers)
    from papa_testkit.pack import load_pack

    return load_pack().NODE_CLASS_MAPPINGS


def widget_values(cls, overrides: dict) -> tuple[list, list]:
    """(widgets_values, linked input specs) of a PAPA node, defaults replaced by ``overrides``."""
    values, links = [], []
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, (typ, opts) in spec.get(section, {}).items():
            if isinstance(typ, list) or typ in WIDGET_TYPES:
                v = overrides.get(name, opts.get("default", typ[0] if isinstance(typ, list) else None))
                values.append(v)
                if opts.get("control_after_generate"):
                    values.append(overrides.get("control_after_generate", "randomize"))
            else:
                links.append((name, typ))
    return values, links


def build() -> dict:
    classes = papa_classes()
    nodes, links = [], []
    # (id, type, pos, size, widgets (PAPA nodes: overrides), {input name: (origin id, slot)}, outputs, mode, title)
    plan = [
        (1, "CheckpointLoaderSimple", [40, 200], [320, 100], [CHECKPOINT], {},
         [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
        (2, "CLIPTextEncode", [400, 60], [400, 160], ["a watercolor painting of a fox in a forest"],
         {"clip": (1, 1)}, [("CONDITIONING", "CONDITIONING")]),
        (3, "CLIPTextEncode", [400, 260], [400, 160], ["blurry, low quality, watermark"], {"clip": (1, 1)},
         [("CONDITIONING", "CONDITIONING")]),
        (4, "PAPA_Session", [40, 420], [320, 180], {"session_name": "my_style"}, {}, [("session", "PAPA_SESSION")]),
        (5, "PAPA_GenerateBatch", [840, 60], [340, 400], {"batch_size": 4},
         {"model": (1, 0), "positive": (2, 0), "negative": (3, 0), "vae": (1, 2), "session": (4, 0)},
         [("images", "IMAGE"), ("latent", "LATENT")]),
        (6, "PAPA_RecordPreference", [1220, 60], [480, 520], {}, {"images": (5, 0), "session": (4, 0)},
         [("session", "PAPA_SESSION")]),
        (7, "PAPA_Update", [1740, 60], [340, 380], {}, {"model": (1, 0), "session": (6, 0)},
         [("model", "MODEL"), ("plot", "IMAGE"), ("session", "PAPA_SESSION")]),
        (8, "PreviewImage", [2120, 60], [420, 300], [], {"images": (7, 1)}, []),
        (9, "PAPA_ExportLoRA", [2120, 400], [340, 160], {"filename": "my_style"}, {"session": (7, 2)},
         [("lora_name", "STRING")]),
    ]
    out_links: dict[tuple[int, int], list[int]] = {}
    link_id = 0
    for nid, typ, pos, size, widgets, inputs, outputs in plan:
        node_inputs = []
        if typ in classes:
            values, linked = widget_values(classes[typ], widgets)
            order = [n for n, _ in linked]
            types_ = dict(linked)
        else:
            values = widgets
            order = list(inputs) if typ != "PreviewImage" else ["images"]
            types_ = {"clip": "CLIP", "images": "IMAGE"}
        for slot, name in enumerate(order):
            origin = inputs.get(name)
            lid = None
            if origin is not None:
                link_id += 1
                lid = link_id
                links.append([lid, origin[0], origin[1], nid, slot, types_[name]])
                out_links.setdefault(origin, []).append(lid)
            node_inputs.append({"name": name, "type": types_[name], "link": lid})
        node = {"id": nid, "type": typ, "pos": pos, "size": size, "flags": {}, "order": nid - 1,
                "mode": 2 if typ == "PAPA_ExportLoRA" else 0, "inputs": node_inputs,
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": typ}, "widgets_values": values}
        if typ == "PAPA_ExportLoRA":
            node["title"] = "PAPA Export LoRA (unmute with Ctrl+M to save)"
        nodes.append(node)
    for node in nodes:
        for o in node["outputs"]:
            o["links"] = out_links.get((node["id"], o["slot_index"]), [])
    return {"last_node_id": len(nodes), "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"info": "ComfyUI-PAPA: generate a batch, rate it in the Record node, queue again. "
                                    "Unmute Export to write models/loras/my_style.safetensors."}, "version": 0.4}


if __name__ == "__main__":
    path = ROOT / "example_workflows" / "papa_loop.json"
    path.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")
