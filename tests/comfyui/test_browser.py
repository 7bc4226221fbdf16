"""The feedback gallery in a real browser: Debian's Chromium driven by Playwright, against a real ComfyUI.

Skipped without COMFYUI_DIR, Chromium or the playwright package. Screenshots go to
$PAPA_TEST_ARTIFACTS (or the test's tmp folder).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from . import graphs

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PAPA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(comfy):
    if not CHROMIUM:
        pytest.skip("Chromium not found (apt install chromium, or set PAPA_CHROMIUM)")
    if comfy.get("/object_info/UpscaleModelLoader")[0] != 200 or "UpscaleModelLoader" not in comfy.get(
            "/object_info/UpscaleModelLoader")[1]:
        pytest.skip("ComfyUI's core UpscaleModelLoader node failed to import (pip install spandrel): without it the "
                    "1.27 frontend cannot build the checkpoint loader's widget")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    comfy.post("/settings/Comfy.TutorialCompleted", True)  # no first-run template dialog over the canvas
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors = []
        # errors raised in this pack's scripts (the frontend's own are not this test's business)
        pg.on("pageerror", lambda e: errors.append(str(e)) if "ComfyUI-PAPA" in (e.stack or "") else None)
        pg.goto(comfy.url)
        pg.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.some("
                             "e => e.name === 'comfyui_papa.gallery')", timeout=120_000)
        pg.papa_errors = errors
        yield pg
        browser.close()


@pytest.fixture
def shots(tmp_path):
    d = Path(os.environ.get("PAPA_TEST_ARTIFACTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_loop(page, session: str, batch: int = 4):
    wf = json.loads((REPO / "example_workflows" / "papa_loop.json").read_text())
    by_type = {n["type"]: n for n in wf["nodes"]}
    by_type["CheckpointLoaderSimple"]["widgets_values"] = [graphs.CKPT]
    by_type["PAPA_Session"]["widgets_values"][0] = session
    by_type["PAPA_GenerateBatch"]["widgets_values"] = [batch, 7, "fixed", graphs.STEPS, graphs.CFG, graphs.SAMPLER,
                                                       graphs.SCHEDULER, graphs.SIZE, graphs.SIZE]
    by_type["PAPA_RecordPreference"]["widgets_values"] = ["", 120]
    w = by_type["PAPA_Update"]["widgets_values"]
    w[4], w[5] = 2, 4  # steps, timesteps per image: a short CPU update
    page.evaluate("wf => window.app.loadGraphData(wf)", wf)


def queue_and_wait_for_gallery(page, batch: int = 4):
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    page.wait_for_function(f"() => document.querySelectorAll('.papa-tile').length === {batch}", timeout=240_000)
    page.wait_for_function("() => [...document.querySelectorAll('.papa-tile img')].every(i => i.complete && "
                           "i.naturalWidth > 0)", timeout=30_000)


def wait_summary(comfy, session, pred, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        status, r = comfy.get(f"/papa/v1/session?name={session}")
        if status == 200 and pred(r):
            return r
        time.sleep(0.5)
    raise TimeoutError(f"session {session} never reached the expected state: {r}")


def test_gallery_clicks_keyboard_and_cancel(comfy, page, shots):
    load_loop(page, "browser1")
    queue_and_wait_for_gallery(page)
    page.screenshot(path=str(shots / "gallery_waiting.png"))
    page.click(".papa-tile[data-index='2'] img")  # larger view, closed by a click
    page.wait_for_selector(".papa-zoom img")
    page.click(".papa-zoom")
    page.wait_for_function("() => !document.querySelector('.papa-zoom')")
    for i in (0, 1):
        page.click(f".papa-tile[data-index='{i}'] .papa-like")
    for i in (2, 3):
        page.click(f".papa-tile[data-index='{i}'] .papa-dislike")
    page.screenshot(path=str(shots / "gallery_rated.png"))
    page.click(".papa-submit")
    r = wait_summary(comfy, "browser1", lambda r: r["summary"]["updates"] == 1)
    assert r["rounds"][0]["feedback"] == [1.0, 1.0, -1.0, -1.0] and r["rounds"][0]["trained"]
    assert (r["summary"]["likes"], r["summary"]["dislikes"]) == (2, 2)
    page.wait_for_function("() => !document.querySelector('.papa-tile')", timeout=30_000)

    # keyboard: digit picks an image, ↑ likes, ↓ dislikes, Enter submits
    queue_and_wait_for_gallery(page)
    page.click(".papa-head")  # focus the page, not a text widget
    for key in ("1", "ArrowUp", "2", "ArrowDown", "3", "ArrowDown", "4", "ArrowUp", "Enter"):
        page.keyboard.press(key)
    r = wait_summary(comfy, "browser1", lambda r: r["summary"]["updates"] == 2)
    assert r["rounds"][1]["feedback"] == [1.0, -1.0, -1.0, 1.0]
    page.screenshot(path=str(shots / "gallery_after_update.png"))

    # Cancel ends the wait: nothing recorded, the node shows it, the queue moves on
    queue_and_wait_for_gallery(page)
    page.click(".papa-cancel")
    r = wait_summary(comfy, "browser1", lambda r: not r["waiting"])
    assert r["summary"]["labelled_rounds"] == 2
    page.wait_for_function("() => document.querySelector('.papa-idle')?.textContent.includes('Cancelled')",
                           timeout=30_000)
    t0 = time.time()
    while comfy.get("/queue")[1]["queue_running"] and time.time() - t0 < 60:
        time.sleep(0.3)
    assert not comfy.get("/queue")[1]["queue_running"]
    assert not page.papa_errors, page.papa_errors
