"""The node pack as ComfyUI loads it, with its session store in a folder of the test's own, its routes
called over HTTP, and a session folder's fingerprint."""
from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = "comfyui_papa"  # the package name the repository is imported under (ComfyUI uses the folder's)


def load_pack() -> types.ModuleType:
    """Import the repository as the ComfyUI node pack (package ``comfyui_papa``), as ComfyUI does: from
    its folder's ``__init__.py``, so the pack's relative imports resolve inside it."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = mod
    spec.loader.exec_module(mod)
    return mod


def folder_hash(folder: Path) -> str:
    """sha256 over every file's relative path and bytes."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


JSON_HEADERS = {"Content-Type": "application/json"}


def call_routes(routes_module, requests, timeout: float = 120):
    """Run (method, path, body bytes | None[, headers]) requests against the pack's handlers on a real
    aiohttp server; returns [(status, json or None)]. Headers default to a JSON content type, as the
    gallery sends."""
    from aiohttp import ClientTimeout, web
    from aiohttp.test_utils import TestClient, TestServer

    async def go():
        app = web.Application()
        table = web.RouteTableDef()
        routes_module.register(table)
        app.add_routes(table)
        out = []
        async with TestClient(TestServer(app)) as client:
            for method, path, body, *headers in requests:
                r = await client.request(method, path, data=body, headers=headers[0] if headers else JSON_HEADERS,
                                         timeout=ClientTimeout(total=timeout))
                try:
                    payload = await r.json(content_type=None)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    payload = None
                out.append((r.status, payload))
        return out

    return asyncio.run(go())


def isolated_store(tmp_path: Path, monkeypatch) -> types.ModuleType:
    """Point the pack's one session store at ``tmp_path/sessions`` (and ComfyUI's loras folder at
    ``tmp_path/loras``) for one test; returns the pack's ``state`` module."""
    load_pack()
    from comfyui_papa.nodes import state

    monkeypatch.setenv("PAPA_SESSION_DIR", str(tmp_path / "sessions"))  # the store follows it
    fp = types.ModuleType("folder_paths")
    fp.get_folder_paths = lambda kind: [str(tmp_path / "loras")]
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return state
