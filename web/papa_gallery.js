// ComfyUI-PAPA feedback gallery: the batch a waiting "PAPA Record Preference" node asks about, shown inside
// that node as thumbnails with 👍 / 👎 / neutral, Submit, Cancel and "👎 all others".
// Keyboard (while a batch waits and no text field has focus): 1-9 pick an image, ↑ like, ↓ dislike,
// 0 neutral, Enter submit, Escape cancel.
// Every route, event name and limit comes from the server (GET /papa/v1/protocol): nodes/protocol.py is
// the single source of truth; only that bootstrap path is written here.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PROTOCOL_PATH = "/papa/v1/protocol";
const NODE_TYPE = "PAPA_RecordPreference";
let proto = null;

const css = `
.papa-gallery { display: flex; flex-direction: column; gap: 6px; font: 12px sans-serif; color: #ddd;
  padding: 4px; box-sizing: border-box; height: 100%; overflow: auto; }
.papa-head { display: flex; justify-content: space-between; gap: 8px; flex-wrap: wrap; }
.papa-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(110px, 1fr)); gap: 6px; }
.papa-tile { position: relative; border: 3px solid #444; border-radius: 6px; overflow: hidden; background: #222; }
.papa-tile.selected { outline: 2px solid #5af; }
.papa-tile.like { border-color: #3c3; } .papa-tile.dislike { border-color: #d33; }
.papa-tile img { width: 100%; display: block; cursor: zoom-in; }
.papa-num { position: absolute; left: 4px; top: 2px; background: #000a; padding: 0 4px; border-radius: 3px; }
.papa-votes { display: flex; justify-content: space-around; background: #111; }
.papa-votes button, .papa-actions button { background: #333; color: #eee; border: 1px solid #555; border-radius: 4px;
  cursor: pointer; padding: 2px 8px; font-size: 13px; }
.papa-votes button.on { background: #575; }
.papa-actions { display: flex; gap: 6px; justify-content: flex-end; }
.papa-actions .papa-submit { background: #2a5; font-weight: bold; }
.papa-idle { color: #999; padding: 8px; }
.papa-zoom { position: fixed; inset: 0; background: #000c; display: flex; align-items: center; justify-content: center;
  z-index: 10000; cursor: zoom-out; }
.papa-zoom img { max-width: 90vw; max-height: 90vh; image-rendering: pixelated; }
`;

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

// --- one gallery per Record node ---------------------------------------------------------------
class Gallery {
  constructor(node) {
    this.node = node;
    this.root = el("div", "papa-gallery");
    this.request = null;
    this.ratings = [];
    this.selected = 0;
    this.message = "Waiting for a batch: queue the workflow.";
    this.render();
  }

  show(request) {
    this.request = request;
    revealNode(this.node);
    this.ratings = new Array(request.batch_size).fill(0);
    this.selected = 0;
    this.deadline = Date.now() + 1000 * request.timeout_s;
    this.message = "";
    this.render();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.renderHead(), 1000);
  }

  done(text) {
    this.request = null;
    clearInterval(this.timer);
    this.message = text;
    this.render();
  }

  rate(i, v) {
    if (!this.request || i < 0 || i >= this.ratings.length) return;
    this.ratings[i] = this.ratings[i] === v ? 0 : v;
    this.selected = i;
    this.render();
  }

  dislikeOthers() {
    this.ratings = this.ratings.map((v) => (v === 0 ? -1 : v));
    this.render();
  }

  async submit() {
    const r = this.request;
    if (!r) return;
    try {
      await post(proto.routes.feedback, { session: r.session, prompt_id: r.prompt_id, node_id: r.node_id,
                                          round: r.round, feedback: this.ratings });
      const likes = this.ratings.filter((v) => v > 0).length;
      const dislikes = this.ratings.filter((v) => v < 0).length;
      this.done(`Sent: 👍 ${likes}  👎 ${dislikes}. Updating…`);
    } catch (e) {
      this.message = `Not sent: ${e.message}`;
      this.renderHead();
    }
  }

  async cancel() {
    const r = this.request;
    if (!r) return;
    try {
      await post(proto.routes.cancel, { session: r.session, prompt_id: r.prompt_id, node_id: r.node_id });
    } catch (e) { /* the wait already ended */ }
    this.done("Cancelled: nothing recorded.");
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
                     el("span", "", `so far 👍 ${s.likes ?? 0} 👎 ${s.dislikes ?? 0} · last loss ${loss}`),
                     el("span", "papa-timer", `${left} s`));
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
    this.request.images.forEach((img, i) => {
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
      for (const [label, value, cls] of [["👍", 1, "papa-like"], ["○", 0, "papa-neutral"], ["👎", -1, "papa-dislike"]]) {
        const b = el("button", cls + (v === value && value !== 0 ? " on" : ""), label);
        b.title = { 1: "like (↑)", 0: "neutral (0)", "-1": "dislike (↓)" }[value];
        b.onclick = (e) => { e.stopPropagation(); value === 0 ? (this.ratings[i] = 0, this.render()) : this.rate(i, value); };
        votes.append(b);
      }
      tile.append(votes);
      grid.append(tile);
    });
    this.root.append(grid);
    const actions = el("div", "papa-actions");
    const others = el("button", "papa-others", "👎 all others");
    others.onclick = () => this.dislikeOthers();
    const cancel = el("button", "papa-cancel", "Cancel");
    cancel.onclick = () => this.cancel();
    const submit = el("button", "papa-submit", "Submit ⏎");
    submit.onclick = () => this.submit();
    actions.append(others, cancel, submit);
    this.root.append(actions);
  }

  key(e) {
    if (!this.request) return false;
    if (/^[1-9]$/.test(e.key)) { this.selected = Math.min(+e.key - 1, this.ratings.length - 1); this.render(); }
    else if (e.key === "ArrowUp") this.rate(this.selected, 1);
    else if (e.key === "ArrowDown") this.rate(this.selected, -1);
    else if (e.key === "0") { this.ratings[this.selected] = 0; this.render(); }
    else if (e.key === "Enter") this.submit();
    else if (e.key === "Escape") this.cancel();
    else return false;
    return true;
  }
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

function activeGallery() {
  for (const g of galleries.values()) if (g.request) return g;
  return null;
}

app.registerExtension({
  name: "comfyui_papa.gallery",
  async setup() {
    const style = el("style");
    style.textContent = css;
    document.head.append(style);
    proto = await (await api.fetchApi(PROTOCOL_PATH)).json();
    api.addEventListener(proto.events.request, ({ detail }) => {
      if (!detail || detail.protocol !== proto.protocol) return;
      const g = galleryFor(detail.node_id);
      if (g) g.show(detail);
    });
    api.addEventListener(proto.events.done, ({ detail }) => {
      const g = detail && galleryFor(detail.node_id);
      if (g && g.request && g.request.prompt_id === detail.prompt_id && detail.outcome !== "recorded") {
        g.done({ cancelled: "Cancelled: nothing recorded.", timeout: "Timed out: the batch is still pending.",
                 interrupted: "Interrupted: nothing recorded." }[detail.outcome] || "Ended.");
      }
    });
    api.addEventListener("execution_interrupted", () => {
      for (const g of galleries.values()) if (g.request) g.done("Interrupted: nothing recorded.");
    });
    window.addEventListener("keydown", (e) => {
      const t = e.target;
      if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
      const g = activeGallery();
      if (g && g.key(e)) { e.preventDefault(); e.stopPropagation(); }
    }, true);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const g = new Gallery(this);
      this.papaGallery = g;
      galleries.add(g);
      this.addDOMWidget("papa_gallery", "papa_gallery", g.root, { serialize: false, getMinHeight: () => 300 });
      this.setSize([Math.max(this.size[0], 480), Math.max(this.size[1], 460)]);
      const onRemoved = this.onRemoved;
      this.onRemoved = function () { galleries.delete(g); return onRemoved?.apply(this, arguments); };
      return r;
    };
  },
});
