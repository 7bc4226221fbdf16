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

from papa_testkit import graphs

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
        pg = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        errors = []
        # errors raised in this pack's scripts (the frontend's own are not this test's business)
        pg.on("pageerror", lambda e: errors.append(str(e)) if "ComfyUI-PAPA" in (e.stack or "") else None)
        # an event the server sends that nothing listens for ("Unknown message type papa.status")
        pg.on("console", lambda m: errors.append(m.text) if "Unknown message type papa" in m.text else None)
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


def close_dialogs(page):
    """Close ComfyUI's dialogs (the error report of a timed-out wait) as a person would, with Escape."""
    for _ in range(5):
        if not page.locator(".p-dialog-mask").count():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    assert not page.locator(".p-dialog-mask").count(), "a dialog stays open"


def load_loop(page, session: str, batch: int = 4, timeout_s: int = 120):
    wf = json.loads((REPO / "example_workflows" / "papa_loop.json").read_text())
    by_type = {n["type"]: n for n in wf["nodes"]}
    by_type["CheckpointLoaderSimple"]["widgets_values"] = [graphs.CKPT]
    by_type["PAPA_Session"]["widgets_values"][0] = session
    by_type["PAPA_GenerateBatch"]["widgets_values"] = [batch, 7, "fixed", graphs.STEPS, graphs.CFG, graphs.SAMPLER,
                                                       graphs.SCHEDULER, graphs.SIZE, graphs.SIZE]
    by_type["PAPA_RecordPreference"]["widgets_values"] = ["", timeout_s]
    w = by_type["PAPA_Update"]["widgets_values"]
    w[4], w[5] = 2, 4  # steps, timesteps per image: a short CPU update
    close_dialogs(page)
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


def waiting_batches(comfy, session):
    return [r for r in comfy.get("/papa/v1/waiting")[1]["waiting"] if r["session"] == session]


def settle_queue(comfy):
    """Clear what a test left queued and end a wait still running, so the next test starts clean."""
    comfy.post("/queue", {"clear": True})
    comfy.post("/interrupt", {})
    t0 = time.time()
    while comfy.get("/queue")[1]["queue_running"] and time.time() - t0 < 120:
        time.sleep(0.3)


@pytest.fixture
def clean(comfy, page):
    """After a test: nothing queued or waiting, no dialog open."""
    yield
    settle_queue(comfy)
    close_dialogs(page)


def test_timed_out_batch_stays_in_the_gallery_and_its_answer_lands_on_it(comfy, page, shots, clean):
    load_loop(page, "late_ui", timeout_s=5)
    queue_and_wait_for_gallery(page)
    [shown] = waiting_batches(comfy, "late_ui")
    page.wait_for_function("() => document.querySelector('.papa-timer')?.textContent === 'timed out'",
                           timeout=60_000)
    page.wait_for_selector(".comfy-error-report", timeout=30_000)  # ComfyUI reports the node's error
    close_dialogs(page)
    assert page.locator(".papa-tile").count() == 4  # the thumbnails stay
    assert "still wait for your answer" in page.inner_text(".papa-msg")
    page.screenshot(path=str(shots / "gallery_timed_out.png"))
    for i, cls in enumerate(("papa-like", "papa-dislike", "papa-neutral", "papa-like")):
        page.click(f".papa-tile[data-index='{i}'] .{cls}")
    page.click(".papa-submit")
    r = wait_summary(comfy, "late_ui", lambda r: r["rounds"] and r["rounds"][0]["feedback"] is not None)
    assert r["rounds"][0]["feedback"] == [1.0, -1.0, 0.0, 1.0]
    assert (r["rounds"][0]["seeds"], r["rounds"][0]["batch"]) == ([7] * 4, shown["batch"])
    page.wait_for_function("() => document.querySelector('.papa-idle')?.textContent.includes('Saved')")
    assert not page.papa_errors, page.papa_errors


def test_keys_leave_comfyui_menus_and_shortcuts_alone(comfy, page, clean):
    load_loop(page, "keys_ui")
    queue_and_wait_for_gallery(page)
    assert page.is_disabled(".papa-submit")  # nothing rated: nothing to submit
    widgets = page.evaluate("() => window.app.graph.findNodesByType('PAPA_Session')[0].widgets.map(w => w.name)")
    assert "seed" in widgets and "control_after_generate" not in widgets  # a resumed session ignores its seed
    # Esc closes ComfyUI's context menu and leaves the batch waiting
    page.mouse.click(200, 900, button="right")
    page.wait_for_selector(".litecontextmenu", timeout=10_000)
    page.keyboard.press("Escape")
    time.sleep(1)
    assert waiting_batches(comfy, "keys_ui")[0]["state"] == "waiting"
    assert page.locator(".papa-tile").count() == 4
    # Ctrl+Enter is ComfyUI's queue shortcut: it must not submit the batch, even over the gallery
    page.hover(".papa-head")
    page.keyboard.press("ArrowUp")  # a rating exists, so a stolen Enter would submit it
    page.keyboard.press("Control+Enter")
    time.sleep(1.5)
    r = comfy.get("/papa/v1/session?name=keys_ui")[1]
    assert r["rounds"][0]["feedback"] is None and r["waiting"]
    # plain keys with the pointer away from the gallery (and the node not selected) do nothing
    page.mouse.click(200, 900)  # deselects the node
    page.mouse.move(200, 900)
    page.keyboard.press("ArrowDown")
    assert page.locator(".papa-tile.dislike").count() == 0
    assert not page.papa_errors, page.papa_errors


def test_a_reloaded_page_and_a_second_tab_show_the_waiting_batch(comfy, page, shots, clean):
    load_loop(page, "tabs_ui")
    queue_and_wait_for_gallery(page)
    page.reload()
    page.wait_for_function("() => window.app && window.app.graph && window.app.extensions?.some("
                           "e => e.name === 'comfyui_papa.gallery')", timeout=120_000)
    page.wait_for_function("() => document.querySelectorAll('.papa-tile').length === 4", timeout=60_000)
    second = page.context.new_page()
    second.set_viewport_size({"width": 1600, "height": 1000})
    second.goto(comfy.url)
    second.wait_for_function("() => document.querySelectorAll('.papa-tile').length === 4", timeout=120_000)
    second.screenshot(path=str(shots / "gallery_second_tab.png"))
    for i in range(4):
        second.click(f".papa-tile[data-index='{i}'] .papa-dislike" if i % 2 else
                     f".papa-tile[data-index='{i}'] .papa-like")
    second.click(".papa-submit")
    r = wait_summary(comfy, "tabs_ui", lambda r: r["summary"]["updates"] == 1)
    assert r["rounds"][0]["feedback"] == [1.0, -1.0, 1.0, -1.0]
    page.wait_for_function("() => !document.querySelector('.papa-tile')", timeout=30_000)  # closed in tab 1 too
    # the Record and Update nodes' status lines read the same (newest) session state
    page.wait_for_function("""() => {
      const s = (t) => window.app.graph.findNodesByType(t)[0]?.papaStatus;
      return s('PAPA_Update')?.includes('updates 1') && s('PAPA_RecordPreference') === s('PAPA_Update');
    }""", timeout=60_000)
    second.close()
    assert not page.papa_errors, page.papa_errors


@pytest.mark.parametrize("batch", [8, 16])
def test_a_batch_of_8_fits_the_node_without_scrolling(comfy, page, shots, clean, batch):
    load_loop(page, f"fit{batch}_ui", batch=batch)
    queue_and_wait_for_gallery(page, batch=batch)
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / f"gallery_batch{batch}.png"))
    geo = page.evaluate("""() => {
      const g = document.querySelector('.papa-gallery');
      const box = (e) => { const r = e.getBoundingClientRect(); return [r.top, r.bottom, r.left, r.right]; };
      return {gallery: box(g), scroll: [g.scrollHeight, g.clientHeight],
              parts: [...document.querySelectorAll('.papa-tile, .papa-submit, .papa-cancel, .papa-head')].map(box),
              viewport: [window.innerHeight, window.innerWidth]};
    }""")
    top, bottom, left, right = geo["gallery"]
    assert geo["scroll"][0] <= geo["scroll"][1] + 1, geo["scroll"]
    for t, b, l, r in geo["parts"]:
        assert top - 1 <= t and b <= bottom + 1 and left - 1 <= l and r <= right + 1, (geo["gallery"], (t, b, l, r))
        assert 0 <= t and b <= geo["viewport"][0], "part of the gallery is off screen"
    assert page.locator(".p-dialog-mask").count() == 0
    assert not page.papa_errors, page.papa_errors


def test_update_node_shows_the_values_of_the_preset_picked(comfy, page):
    """No sentinel on screen: the advanced inputs hold real values, and picking a preset writes its values
    (served by the protocol route) into them, so what the node shows is what the update uses."""
    load_loop(page, "browser_presets")
    shown = page.evaluate("""name => {
        const node = window.app.graph._nodes.find(n => n.type === 'PAPA_Update');
        const preset = node.widgets.find(w => w.name === 'preset');
        preset.value = name;
        preset.callback(name);
        return Object.fromEntries(node.widgets.map(w => [w.name, w.value]));
    }""", "reference")
    presets = comfy.get("/papa/v1/protocol")[1]["update_presets"]
    assert presets["reference"]["lr"] != presets["default"]["lr"]  # the check below can fail
    for name, value in presets["reference"].items():
        assert shown[name] == pytest.approx(value), name
    assert not page.papa_errors, page.papa_errors
