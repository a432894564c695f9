// FastDiT: show the report of "Compare images (PSNR/SSIM)" on the node itself after a run.
// The node sends its report as the `text` of its UI output; the frontend shows no `text` output of
// a node on its own, so this adds a read-only text box that the report fills.
import { app } from "../../scripts/app.js";

const NODE = "FastDiTCompare";
const WIDGET = "fastdit_report";

app.registerExtension({
  name: "FastDiT.CompareReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const box = document.createElement("textarea");
      box.className = "comfy-multiline-input";
      box.readOnly = true;
      box.placeholder = "PSNR / SSIM appear here after a run";
      box.dataset.fastditReport = "1";
      const widget = this.addDOMWidget(WIDGET, "fastdit_report", box, {
        serialize: false, // not an input of the node: left out of the prompt
        hideOnZoom: false,
        getValue: () => box.value,
        setValue: (v) => { box.value = v ?? ""; },
        getMinHeight: () => 72,
      });
      widget.serialize = false; // and out of the saved workflow's widgets_values
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const widget = this.widgets?.find((w) => w.name === WIDGET);
      if (widget) widget.value = (message?.text ?? []).join("\n");
    };
  },
});
