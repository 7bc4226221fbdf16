"""A process playing ComfyUI for one browser answer, so that a test can kill it right after the 200.

    python -m tests.reliability.answer_worker SESSION_ROOT

It serves the pack's real routes (aiohttp on 127.0.0.1, a free port) and runs the real PAPA Record
Preference node in a thread, as ComfyUI's prompt worker would, waiting for the browser's answer to
a stored session's pending round of 4 images. ComfyUI's own modules are replaced by the three
names the node touches (interrupt check, interrupt exception, PreviewImage). Prints ``READY <port>``.
"""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import types

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from papa_testkit.pack import load_pack  # noqa: E402

SESSION = "answer"
BATCH = 4


def fake_comfy() -> None:
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = type("InterruptProcessingException", (Exception,), {})
    mm.throw_exception_if_processing_interrupted = lambda: None
    comfy = types.ModuleType("comfy")
    comfy.model_management = mm
    nodes = types.ModuleType("nodes")
    nodes.PreviewImage = lambda: types.SimpleNamespace(save_images=lambda *a, **k: {"ui": {"images": []}})
    sys.modules.update({"comfy": comfy, "comfy.model_management": mm, "nodes": nodes})


def main() -> None:
    os.environ["PAPA_SESSION_DIR"] = sys.argv[1]
    fake_comfy()
    load_pack()
    from aiohttp import web

    from comfyui_papa.nodes import papa_nodes, routes, state
    from comfyui_papa.nodes.common import SessionRef
    from comfyui_papa.papa_core.lora import LoraConfig, init_lora_state

    cfg = LoraConfig(rank=2, alpha=2.0)
    store = state.store()
    s = store.create(SESSION, "fp", cfg, init_lora_state({"a.to_q": (8, 8)}, cfg))
    s.add_round(torch.randn(BATCH, 4, 8, 8), {"c_crossattn": torch.randn(BATCH, 77, 8)}, seeds=[7] * BATCH)
    store.save(s)

    def record():
        papa_nodes.PAPARecordPreference().run(torch.zeros(BATCH, 8, 8, 3), SessionRef(SESSION, cfg), "",
                                              600, "9")

    threading.Thread(target=record, daemon=True).start()
    app = web.Application()
    table = web.RouteTableDef()
    routes.register(table)
    app.add_routes(table)

    async def serve():
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print("READY", site._server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
