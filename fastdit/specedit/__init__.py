"""SpecEdit: draft-and-verify dynamic resolution for image editing (arXiv 2605.02152).

A draft runs the first steps of the edit (at full resolution by default, or with target and
reference tokens on the coarse grid); per cell, the draft's clean-image estimate is compared with
the source image (discrepancy); only cells the edit changes (plus a margin and a sparse coverage set) are refined
at full resolution, the rest stay coarse and follow the re-noised source ("semantic locking"),
and the source is pasted back there at the end with a blended boundary ring (only the ring cells
the edit left unchanged, by default).

options (presets and knobs), discrepancy (the two measures and cell selection), locking (locked
state and the final composition), sampler (the draft and verify sampler functions and the
ComfyUI entry points the nodes call).
"""
