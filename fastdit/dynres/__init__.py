"""Dynamic-resolution sampling (Fresco, arXiv 2601.07462): the unified noise field (noise_field),
Haar/Hadamard algebra (haar), region selection (selection), resolution changes (transition), stage
plan and options (stages), the sampler (fresco) and its KSampler-style entry (ksampler). Cells,
token sets and the mixed-resolution forward are fastdit.tokens (re-exported by layout and forward)."""
