"""Shared by the reliability tests: hashing a session folder, calling the pack's routes over HTTP."""
from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path


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


def isolated_store(tmp_path: Path, monkeypatch):
    """Point the pack's one session store at ``tmp_path/sessions`` (and ComfyUI's loras folder at
    ``tmp_path/loras``) for one test; returns the pack's ``state`` module."""
    import sys
    import types

    from comfyui_papa.nodes import state

    monkeypatch.setenv("PAPA_SESSION_DIR", str(tmp_path / "sessions"))
    monkeypatch.setattr(state, "_store", None)
    fp = types.ModuleType("folder_paths")
    fp.get_folder_paths = lambda kind: [str(tmp_path / "loras")]
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return state
