"""The PAPA panel in Forge's txt2img, clicked in Chromium: open it, Generate, rate the batch shown in the
panel (the mouse and the keys), Save answers, Update, Export LoRA, Undo. Skipped without FORGE_DIR,
Chromium or the playwright package. The screenshot goes to $PAPA_SHOTS (default: the test's temporary
folder)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PAPA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def test_rate_and_update_from_the_panel(forge, tmp_path):
    if not CHROMIUM:
        pytest.skip("Chromium not found (apt install chromium, or set PAPA_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    shots = Path(os.environ.get("PAPA_SHOTS") or tmp_path)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(forge.url, timeout=120_000)
        page.locator("#papa_enabled").wait_for(state="visible", timeout=120_000)
        page.wait_for_timeout(3000)  # Forge's UI scripts finish wiring the page after it shows (it never idles)
        page.locator("#papa_enabled").click(position={"x": 30, "y": 15})  # the accordion's header: enable PAPA
        page.fill("#papa_session textarea", "panel")
        for field, value in (("steps", "4"), ("width", "128"), ("height", "128"), ("batch_size", "2")):
            box = page.locator(f"#txt2img_{field} input[type=number]")
            box.fill(value)
            box.press("Enter")
        page.click("#txt2img_generate")
        try:
            page.locator("#papa_rate_1").wait_for(state="visible", timeout=300_000)
        except sync_api.TimeoutError:
            page.screenshot(path=str(shots / "forge_panel_timeout.png"))
            pytest.fail("the batch never reached the panel; the page's console:\n" + "\n".join(console[-40:])
                        + f"\nForge's log:\n{forge.log.read_text(errors='replace')[-3000:]}")
        assert not page.locator("#papa_rate_2").is_visible(), "one rating per image of the batch"
        assert page.locator("#papa_gallery img").count() >= 2
        page.locator("#papa_rate_0 label", has_text="👍").click()  # the mouse rates image 1
        page.hover("#papa_gallery")  # the keys (javascript/papa_keys.js) act over the panel
        for key in ("2", "ArrowDown"):  # pick image 2, dislike it
            page.keyboard.press(key)
        page.locator("#papa_enabled").screenshot(path=str(shots / "forge_panel.png"))  # the README's picture
        page.keyboard.press("Enter")  # save
        status = page.locator("#papa_status")
        sync_api.expect(status).to_contain_text("saved + -", timeout=60_000)
        sync_api.expect(status).to_contain_text("1 rated rounds (1 👍, 1 👎)")
        page.locator("#papa_preset label", has_text="how every image looks").click()  # teach a style
        page.click("#papa_update")
        sync_api.expect(status).to_contain_text("updated in", timeout=600_000)
        update = json.loads((forge.sessions / "panel" / "session.json").read_text())["rounds"][0]["update"]
        assert update["objective"] == "dpo", "the style preset learns from the liked-against-disliked pair"
        sync_api.expect(status).to_contain_text("the last update moved the model")
        page.fill("#papa_export_name textarea", "panel_lora")
        page.click("#papa_export")
        sync_api.expect(status).to_contain_text("exported panel_lora.safetensors", timeout=60_000)
        page.click("#papa_undo")
        sync_api.expect(status).to_contain_text("undone", timeout=60_000)
        sync_api.expect(status).to_contain_text("1 rated rounds (1 👍, 1 👎), 0 updates")
        browser.close()
    index = json.loads((forge.sessions / "panel" / "session.json").read_text())
    assert index["rounds"][0]["feedback"] == [1.0, -1.0]  # image 1 by the mouse, image 2 by the keys
    assert (forge.loras / "panel_lora.safetensors").stat().st_size > 1000
