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


def call_routes(routes_module, requests):
    """Run (method, path, body bytes | None) requests against the pack's handlers on a real aiohttp
    server; returns [(status, json or None)]."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def go():
        app = web.Application()
        table = web.RouteTableDef()
        routes_module.register(table)
        app.add_routes(table)
        out = []
        async with TestClient(TestServer(app)) as client:
            for method, path, body in requests:
                r = await client.request(method, path, data=body)
                try:
                    payload = await r.json(content_type=None)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    payload = None
                out.append((r.status, payload))
        return out

    return asyncio.run(go())
