"""Generation overhead of PAPA Generate Batch against the native KSampler with the exported LoRA.

    COMFYUI_DIR=/path/to/ComfyUI python -m benchmarks.generation_overhead [--repeats 6] [--batch 2] [--steps 8]

Starts a real ComfyUI server (``--cpu`` unless ``--gpu``) with this pack and the test suite's
random-weight SD1.5-format checkpoint, trains one update so the LoRA is non-zero, exports it, then
alternates, same seed and settings:
  papa:   PAPA Generate Batch (session LoRA as ComfyUI's own weight patches; records the round; previews)
  native: LoraLoaderModelOnly(exported file) → KSampler → VAEDecode → PreviewImage
Each prompt's time is ComfyUI's own (execution_start → execution_success). Prints a table and,
last, ``overhead <percent>%`` (median papa / median native − 1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from papa_testkit import graphs  # noqa: E402
from papa_testkit.comfy import comfy_dir, error_message, running_server  # noqa: E402


def prompt_seconds(entry: dict) -> float:
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--gpu", action="store_true", help="run the server on its default device instead of --cpu")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    cdir = comfy_dir()
    if cdir is None:
        sys.exit("set COMFYUI_DIR to a ComfyUI checkout")
    graphs.STEPS, graphs.SIZE = a.steps, a.size
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp) / "base", cdir, gpu=a.gpu) as server:
        setup = server.run(graphs.loop("bench", feedback="+ -", filename="bench"))  # a batch of 2
        assert setup["status"]["status_str"] == "success", error_message(setup)
        lora = setup["outputs"]["exp"]["text"][0]
        times: dict[str, list[float]] = {"papa": [], "native": []}
        for i in range(a.repeats + 1):
            seed = 100 + i
            g_papa = graphs.base()
            g_papa.update({"sess": graphs.session("bench"), "gen": graphs.generate(["ckpt", 0], ["sess", 0], seed,
                                                                                    a.batch)})
            g_native = graphs.native(f"native_{i}", seed=seed, batch=a.batch, lora=lora)
            g_native["save"] = {"class_type": "PreviewImage", "inputs": {"images": ["dec", 0]}}
            order = [("papa", g_papa), ("native", g_native)] if i % 2 == 0 else [("native", g_native),
                                                                                 ("papa", g_papa)]
            for name, g in order:
                if name == "papa":  # a batch still waiting for its answer would be shown again, not sampled
                    server.post("/papa/v1/action", {"protocol": 1, "session": "bench", "action": "discard"})
                e = server.run(g)
                assert e["status"]["status_str"] == "success", error_message(e)
                if i > 0:  # the first pair warms caches and model loading up
                    times[name].append(prompt_seconds(e))
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = med["papa"] / med["native"] - 1
    device = "GPU" if a.gpu else "CPU"
    print(f"device {device}, {a.size}x{a.size} px, batch {a.batch}, {a.steps} steps, {a.repeats} pairs")
    for k, v in times.items():
        print(f"{k:7s} median {med[k]:.3f} s  (runs: {', '.join(f'{x:.3f}' for x in v)})")
    if a.out:
        a.out.write_text(json.dumps({"times": times, "median": med, "overhead": overhead, "args": vars(a)},
                                    default=str, indent=1))
    print(f"overhead {100 * overhead:.1f}%")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
