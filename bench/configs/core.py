"""The reference rows: the unaccelerated baseline, and ComfyUI's own EasyCache (built through
ComfyUI's EasyCache node class, so the row measures ComfyUI's code)."""
from . import Config, register

INPUT_COPY_KEY = "fastdit_bench_input_copy"


def _pass_a_copy_of_x(executor, *args, **kwargs):
    return executor(args[0].clone(), *args[1:], **kwargs)


@register("baseline")
def baseline():
    return Config("baseline")


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
