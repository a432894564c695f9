"""FastDiTCompare: PSNR / SSIM / difference heat map between two images (optionally masked)."""
import math

from comfy_api.latest import io

from ..fastdit import metrics


def _fmt_db(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.2f}"


def _fmt_ssim(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.4f}"


def _json_float(v: float) -> float | None:
    """NaN is not valid JSON (the UI receives these values over a websocket): send null."""
    return None if math.isnan(v) else v


def _pixels(n: int) -> str:
    return f"{n} non-finite pixel{'' if n == 1 else 's'}"


def _notes(counts: dict[str, int]) -> list[str]:
    """Why an image's PSNR / SSIM is NaN, and which non-finite pixels were left out."""
    notes = [f"the {side} has {_pixels(counts[side])} (NaN or inf) in the compared region: PSNR and SSIM "
             "are undefined" for side in ("reference", "candidate") if counts[side]]
    if counts["near_mask"]:
        n = counts["near_mask"]
        notes.append(f"{_pixels(n)} outside the mask {'lies' if n == 1 else 'lie'} within SSIM's 11x11 window "
                     "of it: SSIM is undefined")
    if counts["outside_mask"]:
        notes.append(f"{_pixels(counts['outside_mask'])} outside the mask ignored")
    return notes


class FastDiTCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FastDiTCompare",
            display_name="Compare images (PSNR/SSIM)",
            category="FastDiT/analysis",
            description="Measures how close an accelerated image is to a reference image: PSNR (dB, "
                        "higher is closer, inf = identical), SSIM (1 = identical) and a heat map of the "
                        "absolute difference. Batches are compared image by image. An image with NaN or inf "
                        "pixels in the compared region gets PSNR and SSIM nan, with the count in the report.",
            is_output_node=True,
            inputs=[
                io.Image.Input("reference", tooltip="The reference image(s), e.g. the un-accelerated run."),
                io.Image.Input("candidate", tooltip="The image(s) to judge, e.g. the accelerated run. "
                               "Same size as the reference; a single image is compared to every reference."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Restrict the comparison to the white area (e.g. the unedited region). "
                                      "SSIM's 11x11 window also sees up to 5 pixels beyond its edge."),
            ],
            outputs=[
                io.String.Output(display_name="report"),
                io.Float.Output(display_name="psnr", tooltip="PSNR of the batch's mean squared error, in dB; "
                                "nan when an image has non-finite pixels."),
                io.Float.Output(display_name="ssim", tooltip="Mean SSIM over the batch; nan when an image has "
                                "non-finite pixels."),
                io.Image.Output(display_name="heatmap", tooltip="|reference - candidate|, brightest = largest; "
                                "non-finite pixels in blue."),
            ],
        )

    @classmethod
    def execute(cls, reference, candidate, mask=None) -> io.NodeOutput:
        p = metrics.psnr(reference, candidate, mask)
        s = metrics.ssim(reference, candidate, mask)
        counts = metrics.count_nonfinite(reference, candidate, mask)
        heat = metrics.difference_heatmap(reference, candidate, mask)
        psnr_mean = metrics.pooled_psnr(p)
        ssim_mean = float(s.mean())
        per_image = [(float(pi), float(si), counts.image(i)) for i, (pi, si) in enumerate(zip(p, s))]
        head = f"PSNR {_fmt_db(psnr_mean)} dB, SSIM {_fmt_ssim(ssim_mean)}" + (" (masked)" if mask is not None else "")
        if len(p) == 1:
            lines = [head] + [f"  {note}" for note in _notes(per_image[0][2])]
        else:
            head += f" over {len(p)} images"
            undefined = [f"#{i}" for i, (pi, si, _) in enumerate(per_image) if math.isnan(pi) or math.isnan(si)]
            if undefined:
                head += f"; undefined because of non-finite pixels in {', '.join(undefined)}"
            lines = [head] + [f"  #{i}: PSNR {_fmt_db(pi)} dB, SSIM {_fmt_ssim(si)}"
                              + "".join(f" - {note}" for note in _notes(c)) for i, (pi, si, c) in enumerate(per_image)]
        report = "\n".join(lines)
        ui = {"text": [report],
              "fastdit_metrics": [{"psnr": _fmt_db(psnr_mean), "ssim": _json_float(ssim_mean),
                                   "psnr_per_image": [_fmt_db(pi) for pi, _, _ in per_image],
                                   "ssim_per_image": [_json_float(si) for _, si, _ in per_image],
                                   "nonfinite_per_image": [c for _, _, c in per_image]}]}
        return io.NodeOutput(report, psnr_mean, ssim_mean, heat, ui=ui)
