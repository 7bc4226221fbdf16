// Keys for the PAPA panel in the webui's txt2img (Forge / A1111 load an extension's javascript/*.js).
// The same keys as the ComfyUI gallery (web/papa_gallery.js): while the pointer is over the PAPA panel
// and no text field has focus, never with Ctrl / Alt / Meta: 1-9 pick an image, ↑ like, ↓ dislike,
// 0 neutral (each rating moves to the next image), Enter saves the answers.
(function () {
  const SYMBOL = { ArrowUp: "👍", ArrowDown: "👎", 0: "○" };
  let current = 0;
  let inside = false;

  const root = () => gradioApp();
  const shownRows = () => [...root().querySelectorAll("[id^=papa_rate_]")].filter((el) => el.offsetParent !== null);
  const typing = (t) => t && (t.tagName === "TEXTAREA" || t.isContentEditable
    || (t.tagName === "INPUT" && !["radio", "checkbox", "button"].includes(t.type)));

  function mark(rows) {
    rows.forEach((row, i) => row.classList.toggle("papa-current", i === current));
  }

  function choose(row, symbol) { // click the radio whose label shows the symbol: gradio sees a user's change
    const label = [...row.querySelectorAll("label")].find((l) => l.textContent.trim() === symbol);
    const input = label && label.querySelector("input");
    if (input) input.click();
  }

  function onKey(e) {
    if (!inside || e.ctrlKey || e.altKey || e.metaKey || typing(e.target)) return;
    const rows = shownRows();
    if (!rows.length) return;
    current = Math.min(current, rows.length - 1);
    if (/^[1-9]$/.test(e.key) && +e.key <= rows.length) current = +e.key - 1;
    else if (e.key in SYMBOL) {
      choose(rows[current], SYMBOL[e.key]);
      current = Math.min(current + 1, rows.length - 1);
    } else if (e.key === "Enter") {
      root().querySelector("#papa_save").click();
      current = 0;
    } else return;
    mark(rows);
    e.preventDefault();
    e.stopPropagation();
  }

  onUiLoaded(() => {
    const panel = root().querySelector("#papa_enabled");
    if (!panel) return;
    panel.addEventListener("mouseenter", () => { inside = true; mark(shownRows()); });
    panel.addEventListener("mouseleave", () => { inside = false; });
    window.addEventListener("keydown", onKey, true);
  });
})();
