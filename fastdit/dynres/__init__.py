"""Dynamic-resolution sampling (Fresco, arXiv 2601.07462): the unified noise field (noise_field),
Haar/Hadamard algebra (haar), cells, carrier and mixed token layout (layout), region selection
(selection), resolution changes (transition), stage plan and options (stages), the mixed-resolution
DIFFUSION_MODEL wrapper (forward), the sampler (fresco) and its KSampler-style entry (ksampler)."""
