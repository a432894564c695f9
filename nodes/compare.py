"""FastDiTCompare: PSNR / SSIM / difference heat map between two images (optionally masked)."""
import math

from comfy_api.latest import io

from ..fastdit import metrics


def _fmt_db(v):
    return "inf" if math.isinf(v) else f"{v:.2f}"


class FastDiTCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTCompare",
            display_name="Compare images (PSNR/SSIM)",
            category="FastDiT/analysis",
            description="Measures how close an accelerated image is to a reference image: PSNR (dB, "
                        "higher is closer, inf = identical), SSIM (1 = identical) and a heat map of the "
                        "absolute difference. Batches are compared image by image.",
            is_output_node=True,
            inputs=[
                io.Image.Input("reference", tooltip="The reference image(s), e.g. the un-accelerated run."),
                io.Image.Input("candidate", tooltip="The image(s) to judge, e.g. the accelerated run. "
                               "Same size as the reference; a single image is compared to every reference."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Restrict the comparison to the white area (e.g. the unedited region)."),
            ],
            outputs=[
                io.String.Output(display_name="report"),
                io.Float.Output(display_name="psnr", tooltip="PSNR of the batch's mean squared error, in dB."),
                io.Float.Output(display_name="ssim", tooltip="Mean SSIM over the batch."),
                io.Image.Output(display_name="heatmap", tooltip="|reference - candidate|, brightest = largest."),
            ],
        )

    @classmethod
    def execute(cls, reference, candidate, mask=None) -> io.NodeOutput:
        p = metrics.psnr(reference, candidate, mask)
        s = metrics.ssim(reference, candidate, mask)
        heat = metrics.difference_heatmap(reference, candidate, mask)
        psnr_mean = metrics.pooled_psnr(p)
        ssim_mean = float(s.mean())
        lines = [f"PSNR {_fmt_db(psnr_mean)} dB, SSIM {ssim_mean:.4f}"
                 + (" (masked)" if mask is not None else "")
                 + (f" over {len(p)} images" if len(p) > 1 else "")]
        if len(p) > 1:
            lines += [f"  #{i}: PSNR {_fmt_db(float(pi))} dB, SSIM {float(si):.4f}" for i, (pi, si) in enumerate(zip(p, s))]
        report = "\n".join(lines)
        ui = {"text": [report],
              "fastdit_metrics": [{"psnr": _fmt_db(psnr_mean), "ssim": ssim_mean,
                                   "psnr_per_image": [_fmt_db(float(v)) for v in p],
                                   "ssim_per_image": [float(v) for v in s]}]}
        return io.NodeOutput(report, psnr_mean, ssim_mean, heat, ui=ui)
