// ComfyUI-PAPA feedback gallery: the batch a "PAPA Record Preference" node asks about, shown inside that
// node as thumbnails with like / neutral / dislike, Submit, Cancel and "dislike all others".
//
// - An answer names the batch it is about (round + content hash); the server refuses it for any other.
// - A wait that timed out keeps its thumbnails and stays answerable; a page loaded or reloaded while a
//   batch waits restores it from the server (GET waiting), in every tab; an answer in one tab closes it
//   in the others.
// - Keys act only while the pointer or focus is on the gallery (or its node is selected), never with
//   Ctrl / Alt / Meta, and never while a ComfyUI menu, dialog or text field is open: 1-9 pick an image,
//   ↑ like, ↓ dislike, 0 neutral, Enter submit. Escape is left to ComfyUI.
// Every route, event, outcome and node name comes from the server (GET /papa/v1/protocol): nodes/protocol.py
// is the single source of truth; only that bootstrap path is written here.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PROTOCOL_PATH = "/papa/v1/protocol";
let protoPromise = null;
export function loadProtocol() { // one fetch per page: papa_status.js uses it too
  protoPromise ??= api.fetchApi(PROTOCOL_PATH).then((r) => r.json()).then((p) => (proto = p));
  return protoPromise;
}
const TILE = 110; // px: thumbnail column width
const TILE_H = TILE + 30; // thumbnail + its vote row
const MAX_COLS = 4;
let proto = null;

const css = `
.papa-gallery { display: flex; flex-direction: column; gap: 6px; font: 12px sans-serif; color: #ddd;
  padding: 4px; box-sizing: border-box; height: 100%; overflow: hidden; }
.papa-gallery:focus { outline: 1px dashed #5af8; }
.papa-head { display: flex; justify-content: space-between; gap: 8px; flex-wrap: wrap; }
.papa-msg { flex-basis: 100%; color: #fc6; }
.papa-grid { display: grid; gap: 6px; }
.papa-tile { position: relative; border: 3px solid #444; border-radius: 6px; overflow: hidden; background: #222; }
.papa-tile.selected { outline: 2px solid #5af; }
.papa-tile.like { border-color: #3c3; } .papa-tile.dislike { border-color: #d33; }
.papa-tile img { width: 100%; display: block; cursor: zoom-in; }
.papa-num { position: absolute; left: 4px; top: 2px; background: #000a; padding: 0 4px; border-radius: 3px; }
.papa-votes { display: flex; justify-content: space-around; background: #111; }
.papa-votes button, .papa-actions button { background: #333; color: #eee; border: 1px solid #555; border-radius: 4px;
  cursor: pointer; padding: 1px 8px; font-size: 12px; line-height: 16px; }
.papa-votes svg { width: 14px; height: 14px; vertical-align: -2px; fill: currentColor; }
.papa-votes button.papa-like.on { background: #2a6a2a; border-color: #3c3; }
.papa-votes button.papa-dislike.on { background: #7a2222; border-color: #d33; }
.papa-actions { display: flex; gap: 6px; justify-content: flex-end; }
.papa-actions .papa-submit { background: #2a5; font-weight: bold; }
.papa-actions .papa-submit:disabled { background: #333; color: #888; cursor: not-allowed; }
.papa-idle { color: #999; padding: 8px; }
.papa-zoom { position: fixed; inset: 0; background: #000c; display: flex; align-items: center; justify-content: center;
  z-index: 10000; cursor: zoom-out; }
.papa-zoom img { max-width: 90vw; max-height: 90vh; image-rendering: pixelated; }
`;

// drawn here, so they show without an emoji font
const ICONS = {
  like: '<svg viewBox="0 0 16 16" aria-hidden="true"><path d="M8 2 15 12H1z"/></svg>',
  neutral: '<svg viewBox="0 0 16 16" aria-hidden="true"><circle cx="8" cy="8" r="4.5" fill="none" stroke="currentColor" stroke-width="2"/></svg>',
  dislike: '<svg viewBox="0 0 16 16" aria-hidden="true"><path d="M8 14 15 4H1z"/></svg>',
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function post(route, body) {
  const r = await api.fetchApi(route, { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify({ protocol: proto.protocol, ...body }) });
  let data = {};
  try { data = await r.json(); } catch (e) { /* non-JSON error page */ }
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function imageURL(img) {
  const q = new URLSearchParams({ filename: img.filename, subfolder: img.subfolder || "", type: img.type || "temp" });
  return api.apiURL(`/view?${q}`);
}

function counts(values) {
  return `likes ${values.filter((v) => v > 0).length} · dislikes ${values.filter((v) => v < 0).length}`;
}

// --- one gallery per Record node ---------------------------------------------------------------
class Gallery {
  constructor(node) {
    this.node = node;
    this.root = el("div", "papa-gallery");
    this.root.tabIndex = 0; // focusable: keys act while it has focus
    this.root.addEventListener("pointerenter", () => { this.hovered = true; });
    this.root.addEventListener("pointerleave", () => { this.hovered = false; });
    this.request = null;
    this.ratings = [];
    this.selected = 0;
    this.message = "Waiting for a batch: queue the workflow.";
    this.render();
  }

  // request: the server's request (event or GET waiting entry); state "waiting" or "timed_out"
  show(request) {
    const same = this.request && this.request.batch === request.batch;
    this.request = { ...request, state: request.state || "waiting" };
    if (!same) {
      this.ratings = new Array(request.batch_size).fill(proto.symbols.neutral);
      this.selected = 0;
      revealNode(this.node);
    }
    const left = request.seconds_left ?? request.timeout_s;
    this.deadline = Date.now() + 1000 * left;
    this.message = this.request.state === "timed_out" ? timedOutText() : "";
    this.fit();
    this.render();
    clearInterval(this.timer);
    if (this.request.state === "waiting") this.timer = setInterval(() => this.renderHead(), 1000);
  }

  shows(detail) {
    const r = this.request;
    return r && r.session === detail.session && r.round === detail.round;
  }

  timedOut() {
    clearInterval(this.timer);
    this.request.state = "timed_out";
    this.message = timedOutText();
    this.render();
  }

  done(text) {
    this.request = null;
    clearInterval(this.timer);
    this.message = text;
    this.render();
  }

  // a session's new summary (papa.status): replaces whatever status the idle gallery showed
  status(summary) {
    if (this.request || !this.session || summary.session !== this.session) return;
    const loss = summary.last_loss === null || summary.last_loss === undefined ? "–" : Number(summary.last_loss).toFixed(4);
    this.message = `${summary.session}: round ${summary.rounds} · updates ${summary.updates} · loss ${loss}` +
                   (summary.untrained_rounds ? " · answer saved; PAPA Update trains on it when it runs" : "");
    this.render();
  }

  rate(i, v) {
    if (!this.request || i < 0 || i >= this.ratings.length) return;
    this.ratings[i] = this.ratings[i] === v ? proto.symbols.neutral : v;
    this.selected = i;
    this.render();
  }

  dislikeOthers() {
    const { neutral, dislike } = proto.symbols;
    this.ratings = this.ratings.map((v) => (v === neutral ? dislike : v));
    this.render();
  }

  rated() {
    return this.ratings.some((v) => v !== 0);
  }

  async submit() {
    const r = this.request;
    if (!r || !this.rated()) return;
    const values = [...this.ratings];
    try {
      await post(proto.routes.feedback, { session: r.session, prompt_id: r.prompt_id, node_id: r.node_id,
                                          round: r.round, batch: r.batch, feedback: values });
      this.session = r.session;
      this.done(r.state === "timed_out" ? `Saved (${counts(values)}). Queue the workflow again to update.`
                                        : `Saved (${counts(values)}). Updating…`);
    } catch (e) {
      this.message = `Not saved: ${e.message}`;
      this.renderHead();
    }
  }

  async cancel() {
    const r = this.request;
    if (!r) return;
    try {
      await post(proto.routes.cancel, { session: r.session, prompt_id: r.prompt_id, node_id: r.node_id });
    } catch (e) { /* the wait already ended */ }
    this.done(ENDED[proto.outcomes.cancelled]);
  }

  // grow the node to the tile grid (1-16 images: up to 4 columns), so nothing needs scrolling
  fit() {
    const n = this.request.batch_size;
    this.cols = Math.min(MAX_COLS, n);
    this.height = 64 + Math.ceil(n / this.cols) * (TILE_H + 6) + 34; // head + grid + actions
    const [w, h] = this.node.computeSize(); // counts this widget at getMinHeight() = this.height
    this.node.setSize([Math.max(this.node.size[0], w, this.cols * (TILE + 6) + 24), Math.max(this.node.size[1], h)]);
    app.canvas?.setDirty(true, true);
  }

  renderHead() {
    if (!this.head) return;
    const r = this.request;
    const s = (r && r.summary) || {};
    this.head.replaceChildren();
    if (!r) return;
    const left = Math.max(0, Math.round((this.deadline - Date.now()) / 1000));
    const loss = s.last_loss === null || s.last_loss === undefined ? "–" : Number(s.last_loss).toFixed(4);
    this.head.append(el("span", "", `${r.session} · round ${r.round + 1}`),
                     el("span", "", `so far likes ${s.likes ?? 0} · dislikes ${s.dislikes ?? 0} · last loss ${loss}`),
                     el("span", "papa-timer", r.state === "timed_out" ? "timed out" : `${left} s`));
    if (this.message) this.head.append(el("span", "papa-msg", this.message));
  }

  render() {
    this.root.replaceChildren();
    if (!this.request) {
      this.root.append(el("div", "papa-idle", this.message));
      return;
    }
    this.head = el("div", "papa-head");
    this.root.append(this.head);
    this.renderHead();
    const grid = el("div", "papa-grid");
    grid.style.gridTemplateColumns = `repeat(${this.cols || MAX_COLS}, ${TILE}px)`;
    this.request.images.forEach((img, i) => grid.append(this.tile(img, i)));
    this.root.append(grid);
    const actions = el("div", "papa-actions");
    const others = el("button", "papa-others", "dislike all others");
    others.onclick = () => this.dislikeOthers();
    const cancel = el("button", "papa-cancel", "Cancel");
    cancel.title = "nothing is recorded; the next queue samples a new batch";
    cancel.onclick = () => this.cancel();
    const submit = el("button", "papa-submit", "Submit ⏎");
    submit.disabled = !this.rated();
    submit.title = this.rated() ? "save these ratings" : "rate at least one image first (or Cancel)";
    submit.onclick = () => this.submit();
    actions.append(others, cancel, submit);
    this.root.append(actions);
  }

  tile(img, i) {
    const v = this.ratings[i];
    const tile = el("div", "papa-tile" + (v > 0 ? " like" : v < 0 ? " dislike" : "") +
                    (i === this.selected ? " selected" : ""));
    tile.dataset.index = String(i);
    const im = el("img");
    im.src = imageURL(img);
    im.alt = `image ${i + 1}`;
    im.onclick = () => zoom(im.src);
    tile.append(im, el("span", "papa-num", String(i + 1)));
    const votes = el("div", "papa-votes");
    const S = proto.symbols;
    for (const [name, value, tip] of [["like", S.like, "like (↑)"], ["neutral", S.neutral, "neutral (0)"],
                                      ["dislike", S.dislike, "dislike (↓)"]]) {
      const b = el("button", `papa-${name}` + (v === value && value !== S.neutral ? " on" : ""));
      b.innerHTML = ICONS[name];
      b.title = tip;
      b.setAttribute("aria-label", name);
      b.onclick = (e) => { e.stopPropagation(); value === S.neutral ? (this.ratings[i] = value, this.render()) : this.rate(i, value); };
      votes.append(b);
    }
    tile.append(votes);
    return tile;
  }

  hasAttention() {
    const selected = app.canvas?.selected_nodes;
    return this.hovered || this.root.contains(document.activeElement) ||
           !!(selected && (selected[this.node.id] || Object.values(selected).includes(this.node)));
  }

  key(e) {
    if (!this.request || !this.hasAttention()) return false;
    if (/^[1-9]$/.test(e.key)) { this.selected = Math.min(+e.key - 1, this.ratings.length - 1); this.render(); }
    else if (e.key === "ArrowUp") this.rate(this.selected, proto.symbols.like);
    else if (e.key === "ArrowDown") this.rate(this.selected, proto.symbols.dislike);
    else if (e.key === "0") { this.ratings[this.selected] = proto.symbols.neutral; this.render(); }
    else if (e.key === "Enter" && this.rated()) this.submit();
    else return false;
    return true;
  }
}

function timedOutText() {
  return "Waiting timed out: these images still wait for your answer. Rate and Submit here, or type the answer " +
         "into the node and queue again (the same batch is shown, no new one).";
}

function revealNode(node) {
  // the frontend hides DOM widgets when zoomed out (< 50 %): bring the waiting node into view at 100 %
  const canvas = app.canvas;
  if (!canvas?.ds) return;
  if (canvas.ds.scale < 0.75) canvas.ds.scale = 1;
  if (canvas.centerOnNode) canvas.centerOnNode(node);
  canvas.setDirty(true, true);
}

function zoom(src) {
  const o = el("div", "papa-zoom");
  const im = el("img");
  im.src = src;
  o.append(im);
  o.onclick = () => o.remove();
  document.body.append(o);
}

const galleries = new Set();

function galleryFor(nodeId) {
  // node ids are final only after a workflow is configured, so look the node up when a message arrives
  const id = String(nodeId).split(":").pop(); // "outer:inner" inside a subgraph
  const node = app.graph?.getNodeById(Number(id)) ?? app.graph?.getNodeById(id);
  return node?.papaGallery ?? null;
}

// is a ComfyUI menu, dialog, search box or text field in the way of the gallery's keys?
function somethingElseHasTheKeys(e) {
  if (e.ctrlKey || e.altKey || e.metaKey) return true;
  const t = e.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) {
    return true;
  }
  const open = document.querySelectorAll(".litecontextmenu, .litesearchbox, .graphdialog, .p-contextmenu, " +
                                         ".p-dialog, .comfy-modal, .p-menu-overlay");
  return [...open].some((m) => m.getClientRects().length > 0 && getComputedStyle(m).visibility !== "hidden");
}

async function restoreWaiting() {
  // a page loaded (or reloaded, or a second tab) while a batch waits: show it again
  if (!proto) return;
  try {
    const r = await (await api.fetchApi(proto.routes.waiting)).json();
    for (const req of r.waiting || []) galleryFor(req.node_id)?.show(req);
  } catch (e) { /* the server restarts: the next request event brings it */ }
}

const ENDED = { // by outcome name (proto.outcomes): what the gallery says when a wait ends that way
  cancelled: "Cancelled: nothing recorded; the next queue samples a new batch.",
  interrupted: "Interrupted: the batch is still pending; queue again to see it again and answer it.",
};

app.registerExtension({
  name: "comfyui_papa.gallery",
  async setup() {
    const style = el("style");
    style.textContent = css;
    document.head.append(style);
    await loadProtocol();
    api.addEventListener(proto.events.request, ({ detail }) => {
      if (!detail || detail.protocol !== proto.protocol) return;
      galleryFor(detail.node_id)?.show(detail);
    });
    api.addEventListener(proto.events.done, ({ detail }) => {
      if (!detail) return;
      for (const g of galleries) {
        if (!g.shows(detail)) continue;
        if (detail.outcome === proto.outcomes.timeout) g.timedOut();
        else if (detail.outcome === proto.outcomes.recorded) g.done("Answered (in this or another tab).");
        else g.done(ENDED[detail.outcome] || "Ended.");
      }
    });
    api.addEventListener(proto.events.status, ({ detail }) => {
      if (detail?.session) for (const g of galleries) g.status(detail);
    });
    api.addEventListener("execution_interrupted", () => {
      for (const g of galleries) if (g.request?.state === "waiting") g.done(ENDED[proto.outcomes.interrupted]);
    });
    window.addEventListener("keydown", (e) => {
      if (somethingElseHasTheKeys(e)) return;
      for (const g of galleries) {
        if (g.key(e)) { e.preventDefault(); e.stopPropagation(); return; }
      }
    }, true);
    await restoreWaiting();
  },
  async afterConfigureGraph() {
    await restoreWaiting();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    await loadProtocol();
    if (nodeData.name !== proto.node_types.record) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const g = new Gallery(this);
      this.papaGallery = g;
      galleries.add(g);
      this.addDOMWidget("papa_gallery", "papa_gallery", g.root, { serialize: false,
                                                                  getMinHeight: () => g.height ?? 300 });
      this.setSize([Math.max(this.size[0], 480), Math.max(this.size[1], 460)]);
      const onRemoved = this.onRemoved;
      this.onRemoved = function () { galleries.delete(g); return onRemoved?.apply(this, arguments); };
      return r;
    };
  },
});
