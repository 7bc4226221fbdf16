// ComfyUI-PAPA: show each PAPA node's session status (round, likes / dislikes, updates, last loss) under the node.
// The summary comes from the node's own `ui.papa` output, and from every later session-status event, so all
// the nodes of one session read the same, newest state (the Record node's line follows the update too).
// PAPA Update's advanced inputs show the values of the preset picked (they are what the update uses).
// Node names, events and preset values come from the server (GET /papa/v1/protocol): nodes/protocol.py.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { loadProtocol } from "./papa_gallery.js";

const shown = new Set(); // nodes that have drawn a status

export function statusText(s) {
  if (!s) return "";
  const parts = [`session ${s.session}`, `round ${s.rounds ?? 0}`];
  if (s.likes !== undefined) parts.push(`likes ${s.likes} · dislikes ${s.dislikes}`);
  if (s.updates !== undefined) parts.push(`updates ${s.updates}`);
  if (s.last_loss !== null && s.last_loss !== undefined) parts.push(`loss ${Number(s.last_loss).toFixed(4)}`);
  const u = s.last_update;
  if (u?.change !== null && u?.change !== undefined) {
    parts.push(`model moved ${(100 * u.change).toFixed(1)}% (target ${(100 * u.change_target).toFixed(1)}%)`);
  }
  if (u?.peak_gib !== null && u?.peak_gib !== undefined) parts.push(`peak ${u.peak_gib} GiB`);
  if (u?.oom_retries) parts.push(`out of memory ${u.oom_retries}× (retried smaller)`);
  if (s.candidates > s.shown) parts.push(`shown ${s.shown} of ${s.candidates} sampled in ${s.sample_seconds} s`);
  if (s.exported) parts.push(`saved ${s.exported}`);
  return parts.join(" · ");
}

function setStatus(node, summary) {
  node.papaSession = summary.session;
  node.papaStatus = statusText(summary);
  shown.add(node);
  node.setDirtyCanvas(true, false);
}

// Picking a preset writes its values into the advanced inputs (a loaded workflow keeps its own values).
function followPreset(node, presets) {
  const preset = node.widgets?.find((w) => w.name === "preset");
  if (!preset) return;
  const callback = preset.callback;
  preset.callback = function (value) {
    const r = callback?.apply(this, arguments);
    for (const [name, v] of Object.entries(presets[value] ?? {})) {
      const w = node.widgets.find((x) => x.name === name);
      if (w) w.value = v;
    }
    node.setDirtyCanvas(true, true);
    return r;
  };
}

app.registerExtension({
  name: "comfyui_papa.status",
  async setup() {
    const proto = await loadProtocol();
    api.addEventListener(proto.events.status, ({ detail }) => {
      if (!detail?.session) return;
      for (const node of shown) {
        if (node.graph && node.papaSession === detail.session) setStatus(node, { ...detail, exported: undefined });
      }
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const proto = await loadProtocol();
    if (!Object.values(proto.node_types).includes(nodeData.name)) return;
    if (nodeData.name === proto.node_types.update) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = onNodeCreated?.apply(this, arguments);
        followPreset(this, proto.update_presets);
        return r;
      };
    }
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const summary = output?.papa?.[0];
      if (summary) setStatus(this, summary);
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (!this.papaStatus || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "11px sans-serif";
      ctx.fillStyle = "#8fbc8f";
      ctx.fillText(this.papaStatus, 8, this.size[1] + 14);
      ctx.restore();
    };
  },
});
