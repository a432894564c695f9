"""The reference rows: the unaccelerated baseline, plain Euler at another step count (the matched-cost
reference of every technique), and ComfyUI's own EasyCache (built through ComfyUI's EasyCache node
class, so the row measures ComfyUI's code)."""
from . import Config, register

INPUT_COPY_KEY = "fastdit_bench_input_copy"


def _pass_a_copy_of_x(executor, *args, **kwargs):
    return executor(args[0].clone(), *args[1:], **kwargs)


@register("baseline")
def baseline():
    return Config("baseline")


class EulerSteps(Config):
    """The baseline sampler (Euler, simple schedule) at its own step count instead of the bench's."""

    def __init__(self, steps):
        super().__init__(f"euler:steps={steps}")
        self.steps = steps

    def sample(self, model, noise, positive, negative, latent, steps, cfg, seed):
        return super().sample(model, noise, positive, negative, latent, self.steps, cfg, seed)


@register("euler")
def euler(steps):
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"euler needs a whole number of steps >= 1, not {steps!r}")
    return EulerSteps(steps)


def matched_euler_steps(baseline_steps, flops_speedup):
    """The plain-Euler step count whose cost is nearest a technique's: baseline steps / its FLOPs
    speed-up, rounded, at least 1 (Euler's cost is proportional to its steps)."""
    return max(1, round(baseline_steps / flops_speedup))


@register("easycache")
def easycache(reuse_threshold=0.2, start_percent=0.15, end_percent=0.95, copy_input=True):
    """copy_input: ComfyUI 0.3.75's EasyCache adds its cached difference to the network input in
    place on skipped steps. A bf16/fp16 model gets a converted copy of the sampler's latent there, but
    an fp32 model (the tiny test models) gets the latent itself, which EasyCache then corrupts. By
    default an outer DIFFUSION_MODEL wrapper hands EasyCache a copy, as the bf16 path does; set
    copy_input=false to measure the unprotected behaviour."""
    def prepare(model):
        import comfy.patcher_extension as pe
        from comfy_extras.nodes_easycache import EasyCacheNode
        m = model
        if copy_input:
            m = model.clone()
            m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, INPUT_COPY_KEY, _pass_a_copy_of_x)
        return EasyCacheNode.execute(m, reuse_threshold=reuse_threshold, start_percent=start_percent,
                                     end_percent=end_percent, verbose=False).args[0]
    return Config("easycache", prepare=prepare)
