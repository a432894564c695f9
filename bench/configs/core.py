"""The reference rows: the unaccelerated baseline, and ComfyUI's own EasyCache (built through
ComfyUI's EasyCache node class, so the row measures ComfyUI's code)."""
from . import Config, register


@register("baseline")
def baseline():
    return Config("baseline")


@register("easycache")
def easycache(reuse_threshold=0.2, start_percent=0.15, end_percent=0.95):
    def prepare(model):
        from comfy_extras.nodes_easycache import EasyCacheNode
        return EasyCacheNode.execute(model, reuse_threshold=reuse_threshold, start_percent=start_percent,
                                     end_percent=end_percent, verbose=False).args[0]
    return Config("easycache", prepare=prepare)
