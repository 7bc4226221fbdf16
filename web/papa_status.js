// ComfyUI-PAPA: show each PAPA node's session status (round, likes / dislikes, last loss) under the node.
// The summary comes from the node's own `ui.papa` output (see nodes/papa_nodes.py); nothing is sent back.
import { app } from "../../scripts/app.js";

const PAPA_NODES = new Set(["PAPA_Session", "PAPA_GenerateBatch", "PAPA_RecordPreference", "PAPA_Update",
                            "PAPA_ExportLoRA", "PAPA_SessionAction"]);

export function statusText(s) {
  if (!s) return "";
  const parts = [`session ${s.session}`, `round ${s.rounds ?? 0}`];
  if (s.likes !== undefined) parts.push(`👍 ${s.likes}  👎 ${s.dislikes}`);
  if (s.updates !== undefined) parts.push(`updates ${s.updates}`);
  if (s.last_loss !== null && s.last_loss !== undefined) parts.push(`loss ${Number(s.last_loss).toFixed(4)}`);
  if (s.exported) parts.push(`saved ${s.exported}`);
  return parts.join(" · ");
}

app.registerExtension({
  name: "comfyui_papa.status",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!PAPA_NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const summary = output?.papa?.[0];
      if (!summary) return;
      this.papaStatus = statusText(summary);
      this.setDirtyCanvas(true, false);
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
