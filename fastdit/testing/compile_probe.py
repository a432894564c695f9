"""Count torch.compile work around ComfyUI's own TorchCompileModel logic (tests and bench).

`compiled(model)` returns a clone of a ModelPatcher with ComfyUI's torch.compile wrapper
(`comfy_api.torch_helpers.set_torch_compile_wrapper`, or the `TorchCompileModel` node where a
release has only that) using a counting backend that hands every graph to `aot_eager`. Per run,
`probe.runs[i]` tells how many graphs dynamo compiled (one per frame compile, plus one per graph
break segment), how many frame compilations that took and how many were recompilations (code
compiled before, compiled again after a guard failed). `reset()` clears dynamo's caches.

    probe = CompileProbe()
    model = probe.compiled(model)
    with probe.run():
        sample(model, ...)
    probe.runs  # [RunCount(graphs=2, frames=2, recompiles=0, ...), ...]
"""
import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional


def compile_available() -> Optional[str]:
    """None when torch.compile can run here, else why not (for a pytest skip reason)."""
    try:
        import torch
        import torch._dynamo  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the torch build
        return f"torch.compile is not available in this torch build: {e}"
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    return None


@dataclass
class RunCount:
    graphs: int = 0        # graphs handed to the backend (each frame compile and graph-break segment)
    frames: int = 0        # frame compilations (first compiles and recompiles)
    recompiles: int = 0    # frame compilations of code compiled before (a guard failed)
    compile_ids: List[str] = field(default_factory=list)


class CompileProbe:
    def __init__(self, inner: str = "aot_eager"):
        self.inner = inner
        self.runs: List[RunCount] = []
        self._current: Optional[RunCount] = None
        self._seen = set()

    def backend(self, gm, example_inputs):
        """The backend ComfyUI's wrapper hands to torch.compile: counts, then runs `inner`."""
        from torch._dynamo.backends.registry import lookup_backend
        from torch._guards import CompileContext
        count = self._current
        if count is not None:
            count.graphs += 1
            cid = CompileContext.current_compile_id()
            key = (getattr(cid, "frame_id", None), getattr(cid, "frame_compile_id", None))
            if key not in self._seen:
                self._seen.add(key)
                count.frames += 1
                count.compile_ids.append(str(cid))
                if (key[1] or 0) > 0:
                    count.recompiles += 1
        return lookup_backend(self.inner)(gm, example_inputs)

    def compiled(self, model):
        """A clone of `model` with ComfyUI's torch.compile wrapper (whole diffusion model)."""
        m = model.clone()
        _compile_wrapper_setter()(m, self.backend)
        return m

    @contextlib.contextmanager
    def run(self) -> Iterator[RunCount]:
        """Count the compile work of one sampling run."""
        count = RunCount()
        self._current = count
        try:
            yield count
        finally:
            self._current = None
            self.runs.append(count)

    def reset(self) -> None:
        """Forget every compiled frame (dynamo's caches and counters) and this probe's runs."""
        import torch._dynamo
        torch._dynamo.reset()
        self.runs.clear()
        self._seen.clear()


def _compile_wrapper_setter() -> Callable:
    """ComfyUI's way of compiling a ModelPatcher on this release (found by feature, not version)."""
    try:
        from comfy_api.torch_helpers import set_torch_compile_wrapper
    except ImportError:
        set_torch_compile_wrapper = None
    if set_torch_compile_wrapper is not None:
        return lambda m, backend: set_torch_compile_wrapper(model=m, backend=backend)
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    def via_node(m, backend):
        out = TorchCompileModel.execute(m, backend)
        patched = getattr(out, "args", out)[0]
        m.__dict__.update(patched.__dict__)
    return via_node
