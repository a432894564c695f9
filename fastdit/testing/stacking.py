"""Stacks of the pack's nodes with each other and with ComfyUI's own nodes: graph builders and the
works-or-refused measurement behind tests/test_stacking_matrix.py and the README's compatibility
table (scripts/compat_table.py).

Every stack is an API-format graph of real nodes (ComfyUI's loaders and node classes, the pack's
nodes) on the tiny FLUX model (`FastDiTTestModel`), executed by ComfyUI's own executor; images are
compared by `FastDiTCompare`.

Definitions
    part         one node (or node pair) of a stack: the pack's HiCache, SVD-Cache (calibrate +
                 patch), Fresco (its KSampler node, or its SAMPLER in SamplerCustom); ComfyUI's
                 EasyCache, LazyCache, Context Windows (Manual) (over the latent's rows, dim 2),
                 LoRA (LoraLoaderModelOnly) and ControlNet (ComfyUI's ControlNetFlux at the tiny
                 model's width, from the pack's FastDiTTestControlNet node, + ControlNetApplyAdvanced).
    accelerator  a part that approximates the model it is given: HiCache, SVD-Cache, Fresco,
                 EasyCache, LazyCache.
    content      a part that changes what is sampled: LoRA, ControlNet, context windows.
    baseline     of a stack: the same graph with its accelerators removed and its content kept,
                 sampled by KSampler (euler, simple, the same seed, steps and cfg). The baseline of
                 HiCache + LoRA is the LoRA model sampled normally.
    PSNR         of a stack: PSNR (dB, images in [0, 1]) of its decoded image against its baseline's.
    part alone   of an accelerator A: the graph holding only A, on the bare tiny model; its PSNR is
                 against the bare model's baseline. A content part alone is its own baseline
                 (infinite PSNR), so it never sets the floor.
    floor        of a stack: min over its accelerators of PSNR(part alone), minus 6 dB.
    works        the stack runs, its image is finite and PSNR >= floor.
    refused      the stack stops with UnsupportedInputError (a ValueError) whose message names both
                 parts.
    broken       anything else: another error, a refusal that does not name both parts, a
                 non-finite image or a PSNR below the floor.

A SVD-Cache part calibrates its basis on the stack's content model (LoRA and context windows
applied, no accelerator) with the stack's conditioning (ControlNet applied), as its calibration
node asks: after LoRAs, before SVD-Cache.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import uuid
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from . import tiny_models

PACK_PARTS = ("HiCache", "SVD-Cache", "Fresco")
OTHER_PARTS = ("EasyCache", "LazyCache", "context windows", "LoRA", "ControlNet")
COLUMNS = PACK_PARTS + OTHER_PARTS
ACCELERATORS = frozenset(PACK_PARTS + ("EasyCache", "LazyCache"))
CONTENT = frozenset(("LoRA", "ControlNet", "context windows"))
FRESCO_ENTRIES = ("ksampler", "sampler")   # FastDiTFrescoKSampler; FastDiTFrescoSampler in SamplerCustom

# what an error message calls a part
MESSAGE_NAMES = {"HiCache": "HiCache", "SVD-Cache": "SVD-Cache", "Fresco": "Fresco", "EasyCache": "EasyCache",
                 "LazyCache": "LazyCache", "context windows": "context window", "LoRA": "LoRA",
                 "ControlNet": "ControlNet"}
FLOOR_DB = 6.0

# the sampling every graph shares
STEPS, CFG, SEED, SIZE = 16, 2.0, 3, 16
HICACHE = dict(interval=4, warmup_steps=2, speed="custom")
SVDCACHE = dict(interval=4, warmup_steps=2, speed="custom")
FRESCO = dict(preset="balanced")
WINDOWS = dict(context_length=8, context_overlap=4, context_schedule="standard_static", fuse_method="pyramid", dim=2)

LORA_FILE = "fastdit_tiny_flux_lora.safetensors"
HINT_FILE = "fastdit_tiny_flux_hint.png"


# -- assets: a tiny LoRA, a tiny FLUX ControlNet and its hint image --------------------------------------
def tiny_lora_state_dict(model, seed: int = 5, rank: int = 4, scale: float = 0.3) -> Dict[str, torch.Tensor]:
    """A LoRA in ComfyUI's lora_up / lora_down key format on three linear layers of a tiny FLUX model."""
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    for name in ("double_blocks.0.img_attn.qkv", "double_blocks.1.txt_mlp.0", "single_blocks.0.linear1"):
        w = model.model.diffusion_model.get_submodule(name).weight
        lora[f"diffusion_model.{name}.lora_up.weight"] = torch.randn(w.shape[0], rank, generator=gen) * scale
        lora[f"diffusion_model.{name}.lora_down.weight"] = torch.randn(rank, w.shape[1], generator=gen) * scale
    return lora


TINY_CONTROLNET_NODE = "FastDiTTestControlNet"   # the pack's tiny ControlNet node (nodes/testing.py)


def hint_image(size: int = 64):
    """A PIL image: a bright disc and a bar on a dark ground (the ControlNet's hint)."""
    from PIL import Image
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size * 0.35) ** 2 + (xx - size * 0.4) ** 2) < (size * 0.22) ** 2
    bar = (yy > size * 0.7) & (yy < size * 0.82) & (xx > size * 0.15)
    img = torch.where(disc | bar, 230, 20).to(torch.uint8)
    return Image.fromarray(torch.stack([img, img.flip(1), img], -1).numpy())


def write_assets() -> Dict[str, str]:
    """Writes the LoRA and the ControlNet's hint image into ComfyUI's loras and input folders (where
    the loader nodes look); returns {part: file name}."""
    import folder_paths
    from safetensors.torch import save_file
    paths = {"LoRA": (folder_paths.get_folder_paths("loras")[0], LORA_FILE),
             "hint": (folder_paths.get_input_directory(), HINT_FILE)}
    for folder, _ in paths.values():
        os.makedirs(folder, exist_ok=True)
    save_file(tiny_lora_state_dict(tiny_models.make_model("flux")), os.path.join(*paths["LoRA"]))
    hint_image().save(os.path.join(*paths["hint"]))
    return {k: name for k, (_, name) in paths.items()}


# -- graph builders ---------------------------------------------------------------------------------
def _defaults(class_type: str) -> Dict[str, object]:
    """The node's required inputs with their defaults (combos: their default or first option), read
    from the node class, so graphs follow each ComfyUI version's inputs."""
    import nodes
    types = nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()
    out = {}
    for name, spec in types.get("required", {}).items():
        kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
        if "default" in opts:
            out[name] = opts["default"]
        elif isinstance(kind, (list, tuple)) and kind:
            out[name] = kind[0]
    return out


class Graph:
    """An API-format graph under construction: add() returns the node id; links are (id, index)."""

    def __init__(self):
        self.nodes: Dict[str, dict] = {}

    def add(self, class_type: str, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        values = _defaults(class_type)
        values.update({k: list(v) if isinstance(v, tuple) else v for k, v in inputs.items()})
        self.nodes[node_id] = {"class_type": class_type, "inputs": values}
        return node_id


def _check_stack(stack: Sequence[str]) -> None:
    unknown = [p for p in stack if p not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown stack parts {unknown}; supported: {', '.join(COLUMNS)}")
    if "Fresco" in stack and stack[-1] != "Fresco":
        raise ValueError("Fresco is the sampler: it must be the last part of a stack")


def _patched(g: Graph, model: tuple, part: str, files: Dict[str, str]) -> tuple:
    """`model` after the node of a model-patching part (the same MODEL for others)."""
    if part == "LoRA":
        return g.add("LoraLoaderModelOnly", model=model, lora_name=files["LoRA"], strength_model=1.0), 0
    if part == "context windows":
        return g.add("ContextWindowsManual", model=model, **WINDOWS), 0
    if part in ("EasyCache", "LazyCache"):
        return g.add(part, model=model), 0
    if part == "HiCache":
        return g.add("FastDiTHiCache", model=model, **HICACHE), 0
    return model


def _branch(g: Graph, src: str, stack: Sequence[str], files: Dict[str, str], fresco_entry: str) -> str:
    """Adds the nodes of `stack` (in order) after the tiny model `src`; returns the decoded image's node."""
    model, positive, negative = (src, 0), (src, 1), (src, 2)
    if "ControlNet" in stack:
        net = g.add(TINY_CONTROLNET_NODE)
        hint = g.add("LoadImage", image=files["hint"])
        apply = g.add("ControlNetApplyAdvanced", positive=positive, negative=negative, control_net=(net, 0),
                      image=(hint, 0), strength=1.0, start_percent=0.0, end_percent=1.0)
        positive, negative = (apply, 0), (apply, 1)
    for part in stack:
        if part == "SVD-Cache":   # the basis comes from the content model: LoRA and windows, no accelerator
            content = (src, 0)
            for p in stack:
                content = _patched(g, content, p, files) if p in CONTENT else content
            basis = g.add("FastDiTSVDCacheCalibrate", model=content, positive=positive, negative=negative,
                          latent=(src, 3), steps=STEPS, cfg=CFG, seed=SEED, tau=0.85, **SVDCACHE)
            model = (g.add("FastDiTSVDCache", model=model, basis=(basis, 0), **SVDCACHE), 0)
        else:
            model = _patched(g, model, part, files)
    common = dict(positive=positive, negative=negative, seed=SEED, steps=STEPS, cfg=CFG, scheduler="simple")
    if stack and stack[-1] == "Fresco" and fresco_entry == "ksampler":
        out = g.add("FastDiTFrescoKSampler", model=model, latent_image=(src, 3), **common, **FRESCO)
    elif stack and stack[-1] == "Fresco":
        sampler = g.add("FastDiTFrescoSampler", **FRESCO)
        sigmas = g.add("BasicScheduler", model=model, scheduler="simple", steps=STEPS, denoise=1.0)
        out = g.add("SamplerCustom", model=model, add_noise=True, noise_seed=SEED, cfg=CFG, positive=positive,
                    negative=negative, sampler=(sampler, 0), sigmas=(sigmas, 0), latent_image=(src, 3))
    else:
        out = g.add("KSampler", model=model, latent_image=(src, 3), sampler_name="euler", denoise=1.0, **common)
    return g.add("VAEDecode", samples=(out, 0), vae=(src, 4))


def baseline_of(stack: Sequence[str]) -> Tuple[str, ...]:
    """The stack's content parts, in order (its baseline graph)."""
    return tuple(p for p in stack if p in CONTENT)


def compare_graph(stack: Sequence[str], files: Dict[str, str], fresco_entry: str = "ksampler",
                  reference: Optional[Sequence[str]] = None) -> Tuple[dict, str]:
    """(graph, id of its Compare node): `stack` against `reference` (default: the stack's baseline)."""
    _check_stack(stack)
    if fresco_entry not in FRESCO_ENTRIES:
        raise ValueError(f"fresco_entry must be one of {', '.join(FRESCO_ENTRIES)}, not {fresco_entry!r}")
    g = Graph()
    src = g.add("FastDiTTestModel", family="flux", seed=0, width=SIZE, height=SIZE, frames=1, batch_size=1)
    ref = _branch(g, src, baseline_of(stack) if reference is None else reference, files, fresco_entry)
    cand = _branch(g, src, stack, files, fresco_entry)
    return g.nodes, g.add("FastDiTCompare", reference=(ref, 0), candidate=(cand, 0))


# -- running ----------------------------------------------------------------------------------------
class GraphFailed(RuntimeError):
    """A graph stopped with a node's error: its type name, message and the node's class."""

    def __init__(self, exception_type: str, message: str, node_type: str):
        super().__init__(f"{node_type}: {exception_type}: {message}")
        self.exception_type, self.message, self.node_type = exception_type, message, node_type


class GraphRunner:
    """ComfyUI's PromptExecutor kept across graphs with its LRU output cache (`--cache-lru`), so a
    branch graphs share (the tiny model, a baseline, a calibration, a stack measured twice) runs once."""

    def __init__(self, cache_size: int = 1000):
        import execution
        from .comfy_env import _QuietServer
        self.server = _QuietServer()
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.LRU,
                                                 cache_args={"lru": cache_size, "ram": 0, "ram_inactive": 0})

    def run(self, graph: dict) -> dict:
        """UI outputs {node_id: ui}; raises GraphFailed with the failing node's error."""
        import execution
        pid = str(uuid.uuid4())
        valid, err, outputs, node_errors = asyncio.run(execution.validate_prompt(pid, graph, None))
        if not valid:
            raise ValueError(f"invalid graph: {err.get('message')}: {node_errors}")
        self.executor.execute(graph, pid, {}, outputs)
        if not self.executor.success:
            errors = [d for ev, d in self.executor.status_messages if ev == "execution_error"]
            e = errors[0] if errors else {}
            raise GraphFailed(str(e.get("exception_type", "?")), str(e.get("exception_message", "?")).strip(),
                              str(e.get("node_type", "?")))
        return self.executor.history_result["outputs"]


def _psnr(value) -> float:
    return float(value) if value not in (None, "nan") else math.nan


@dataclasses.dataclass
class Outcome:
    """The measured result of one stack (parts in the order they are applied)."""
    stack: Tuple[str, ...]
    fresco_entry: str
    verdict: str                       # works | refused | broken
    psnr: Optional[float] = None       # vs the baseline (works / broken by PSNR)
    floor: Optional[float] = None
    alone: Optional[Dict[str, float]] = None
    error: Optional[GraphFailed] = None
    why: str = ""                      # for broken: what failed

    @property
    def parts(self) -> frozenset:
        return frozenset(self.stack)

    @property
    def reason(self) -> str:
        """A refusal's short reason: the message's explanation (after the first ': ', to the first '.')."""
        if self.error is None:
            return ""
        text = self.error.message.split(": ", 1)[-1]
        return re.split(r"\.(\s|$)", text, maxsplit=1)[0].strip()

    def line(self) -> str:
        name = " + ".join(self.stack) + (" (Fresco SAMPLER)" if "Fresco" in self.stack and
                                         self.fresco_entry == "sampler" else "")
        if self.verdict == "works":
            return f"{name}: works, PSNR {self.psnr:.2f} dB (floor {self.floor:.2f} dB)"
        if self.verdict == "refused":
            return f"{name}: refused by {self.error.node_type}: {self.error.message}"
        return f"{name}: BROKEN: {self.why}"


def names_both(message: str, stack: Iterable[str]) -> bool:
    return all(MESSAGE_NAMES[p].lower() in message.lower() for p in set(stack))


class StackingMatrix:
    """Measures stacks against their baselines and their parts alone (module docstring)."""

    def __init__(self, files: Optional[Dict[str, str]] = None, runner: Optional[GraphRunner] = None):
        self.files = files or write_assets()
        self.runner = runner or GraphRunner()
        self._psnr: Dict[tuple, float] = {}

    @staticmethod
    def _key(stack: Sequence[str], fresco_entry: str, reference: Optional[Sequence[str]]) -> tuple:
        ref = None if reference is None else tuple(reference)
        return tuple(stack), ref, fresco_entry if "Fresco" in tuple(stack) + (ref or ()) else None

    def record(self, stack: Sequence[str], psnr: float, fresco_entry: str = "ksampler",
               reference: Optional[Sequence[str]] = None) -> None:
        """Takes `psnr` as the measurement of `stack` (replaying a run, or checking the rule)."""
        self._psnr[self._key(stack, fresco_entry, reference)] = psnr

    def psnr(self, stack: Sequence[str], fresco_entry: str = "ksampler",
             reference: Optional[Sequence[str]] = None) -> float:
        """PSNR of `stack` against `reference` (default: its baseline); raises GraphFailed."""
        key = self._key(stack, fresco_entry, reference)
        if key not in self._psnr:
            graph, compare = compare_graph(stack, self.files, fresco_entry, reference)
            ui = self.runner.run(graph)[compare]
            self._psnr[key] = _psnr(ui["fastdit_metrics"][0]["psnr"])
        return self._psnr[key]

    def alone(self, part: str, fresco_entry: str = "ksampler") -> float:
        return self.psnr((part,), fresco_entry) if part in ACCELERATORS else math.inf

    def measure(self, stack: Sequence[str], fresco_entry: str = "ksampler") -> Outcome:
        stack = tuple(stack)
        out = Outcome(stack, fresco_entry, "broken")
        try:
            out.psnr = self.psnr(stack, fresco_entry)
        except GraphFailed as e:
            out.error = e
            if e.exception_type.rsplit(".", 1)[-1] == "UnsupportedInputError" and names_both(e.message, stack):
                out.verdict = "refused"
            else:
                out.why = f"{e} (a refusal must be an UnsupportedInputError naming {' and '.join(sorted(set(stack)))})"
            return out
        out.alone = {p: self.alone(p, fresco_entry) for p in sorted(set(stack)) if p in ACCELERATORS}
        out.floor = min(out.alone.values()) - FLOOR_DB
        if math.isnan(out.psnr):
            out.why = "the image is not finite"
        elif out.psnr < out.floor:
            out.why = (f"PSNR {out.psnr:.2f} dB vs its baseline, more than {FLOOR_DB:g} dB below its weaker part "
                       f"alone ({', '.join(f'{p} {v:.2f} dB' for p, v in out.alone.items())})")
        else:
            out.verdict = "works"
        return out


# -- the matrix -------------------------------------------------------------------------------------
def stacks_of(row: str, column: str) -> List[Tuple[str, ...]]:
    """The stacks (orders of application) measured for a table cell; [] where the pair is not a stack
    (Fresco with itself: one sampler per graph)."""
    if row not in PACK_PARTS or column not in COLUMNS:
        raise ValueError(f"rows are {', '.join(PACK_PARTS)}; columns {', '.join(COLUMNS)}")
    if row == column:
        return [] if row == "Fresco" else [(row, row)]
    if "Fresco" in (row, column):
        other = column if row == "Fresco" else row
        return [(other, "Fresco")]
    if "ControlNet" in (row, column):
        return [(row, column)]
    return [(column, row), (row, column)]


def all_stacks() -> List[Tuple[str, ...]]:
    """Every stack of the matrix once (a pack x pack pair appears in two cells)."""
    seen = []
    for row in PACK_PARTS:
        for column in COLUMNS:
            for stack in stacks_of(row, column):
                if stack not in seen:
                    seen.append(stack)
    return seen


def _notes(outcomes: Dict[Tuple[str, ...], Outcome]) -> List[str]:
    """The refusal reasons in table order (row by row), each once."""
    notes = []
    for row in PACK_PARTS:
        for column in COLUMNS:
            for stack in stacks_of(row, column):
                o = outcomes[stack]
                if o.verdict == "refused" and o.reason not in notes:
                    notes.append(o.reason)
    return notes


def _note_line(number: int, reason: str, outcomes: Dict[Tuple[str, ...], Outcome]) -> str:
    """'[n] A or B with C: reason.' over the pairs refused for `reason`."""
    pairs = {o.parts for o in outcomes.values() if o.verdict == "refused" and o.reason == reason}
    ordered = [sorted(p, key=COLUMNS.index) for p in pairs]
    firsts = sorted({p[0] for p in ordered}, key=COLUMNS.index)
    lasts = sorted({p[-1] for p in ordered}, key=COLUMNS.index)
    if len(pairs) == len(firsts) * len(lasts):            # every combination: "A or B with C or D"
        who = f"{' or '.join(firsts)} with {' or '.join(lasts)}"
    else:
        who = ", ".join(" with ".join(p) for p in sorted(ordered, key=lambda p: [COLUMNS.index(x) for x in p]))
    return f"[{number}] {who}: {reason}."


def cell_text(outcomes: Sequence[Outcome], notes: Sequence[str] = ()) -> str:
    """A table cell: 'works (PSNR x dB)' (the lowest over the orders, whole dB), 'refused [n]' (n: the
    reason's place in `notes`, else the reason itself), each order spelt out when they differ; '-'
    where the pair is not a stack."""
    if not outcomes:
        return "-"
    verdicts = {o.verdict for o in outcomes}
    if verdicts == {"works"}:
        return f"works (PSNR {min(o.psnr for o in outcomes):.0f} dB)"
    if verdicts == {"refused"} and len({o.reason for o in outcomes}) == 1:
        reason = outcomes[0].reason
        return f"refused [{list(notes).index(reason) + 1}]" if reason in notes else f"refused: {reason}"
    return "; ".join(f"{' then '.join(o.stack)}: " + (cell_text([o], notes) if o.verdict != "broken" else "BROKEN")
                     for o in outcomes)


def table(outcomes: Dict[Tuple[str, ...], Outcome]) -> str:
    """The Markdown table (rows the pack's nodes, columns each alone and with every part) and its
    numbered refusal reasons; `outcomes` as run_matrix returns them."""
    notes = _notes(outcomes)
    lines = ["| | alone | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for row in PACK_PARTS:
        cells = [f"PSNR {outcomes[(row,)].psnr:.0f} dB"]
        cells += [cell_text([outcomes[s] for s in stacks_of(row, c)], notes) for c in COLUMNS]
        lines.append(f"| **{row}** | " + " | ".join(cells) + " |")
    notes_lines = [_note_line(i, note, outcomes) + "  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines + [""] + notes_lines).rstrip()


BEGIN, END = "<!-- compat-table:begin -->", "<!-- compat-table:end -->"
INTRO = f"""Generated by `scripts/compat_table.py` from the matrix that `tests/test_stacking_matrix.py` runs
through ComfyUI's executor on the tiny FLUX model ({STEPS} euler steps, cfg {CFG:g} with a negative
prompt), each pair in every order it can be applied. *alone*: the node on the bare model against the
plain KSampler run. *works (PSNR x dB)*: the stack's image against the same graph without the
accelerators (LoRA, ControlNet and context windows kept), the lowest over the orders in whole dB, at
most {FLOOR_DB:g} dB below the weaker accelerator alone. *refused [n]*: the graph stops with an
error that names both nodes, for reason n below the table. The tiny model draws noise-like images:
the numbers compare stacks, they do not grade image quality. HiCache or SVD-Cache applied twice
keeps the second node's settings, with a warning. Fresco's SAMPLER in SamplerCustom gives the same
verdicts and images as its KSampler node. Context windows run over the latent's rows here (dim 2),
the mechanism they use for frames on video models."""


def readme_section(outcomes: Dict[Tuple[str, ...], Outcome]) -> str:
    """The README text between the markers (markers excluded)."""
    return "\n".join(["", INTRO, "", table(outcomes), ""])


def replace_section(text: str, section: str) -> str:
    """`text` with the part between the markers replaced by `section`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected one {BEGIN} ... {END} pair in the README")
    head, rest = text.split(BEGIN)
    return head + BEGIN + section + END + rest.split(END, 1)[1]


def current_section(text: str) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"expected one {BEGIN} ... {END} pair in the README")
    return text.split(BEGIN)[1].split(END)[0]


PSNR_TOLERANCE_DB = 2.0
_PSNR = re.compile(r"PSNR (-?\d+|inf) dB")


def section_difference(written: str, measured: str) -> Optional[str]:
    """None when a README section says what `measured` says: the same text, verdicts and reasons,
    and each PSNR within PSNR_TOLERANCE_DB (ComfyUI versions differ in the last digits); else what
    differs."""
    if _PSNR.sub("PSNR x dB", written) != _PSNR.sub("PSNR x dB", measured):
        return "the verdicts, reasons or text differ"
    for a, b in zip(_PSNR.findall(written), _PSNR.findall(measured)):
        if abs(float(a) - float(b)) > PSNR_TOLERANCE_DB:
            return f"a PSNR moved from {a} to {b} dB"
    return None


def run_matrix(matrix: Optional[StackingMatrix] = None) -> Dict[Tuple[str, ...], Outcome]:
    """{stack: Outcome} for the pack's nodes alone and every stack of the matrix."""
    matrix = matrix or StackingMatrix()
    return {s: matrix.measure(s) for s in [(p,) for p in PACK_PARTS] + all_stacks()}
