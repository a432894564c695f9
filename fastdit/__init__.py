"""FastDiT: training-free acceleration of diffusion transformers inside ComfyUI.

The library is part of the pack: ComfyUI imports the pack as a package named after its folder, and
the library reaches the pack's `kernels/` relatively. Everything model-specific lives in
`fastdit.adapters`.
"""
__version__ = "0.1.0"

if __name__ == "fastdit":
    # Imported by its top-level name from a checkout (tests, bench, demo scripts), not through the
    # pack. Route the names `fastdit`, `demo`, `kernels` and every other name this folder is imported
    # under (ComfyUI's loader names the package after the folder) to one package, `comfyui_fastdit`,
    # so that a process holds one module object per file and class identity holds. The import system
    # hands out the replacement put in sys.modules while a module loads.
    import importlib
    import importlib.abc
    import importlib.util
    import os
    import sys

    PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    PACKAGE = "comfyui_fastdit"
    TOP_LEVEL = ("fastdit", "demo", "kernels")

    def _is_this_pack(module):
        path = getattr(module, "__file__", None)
        return bool(path) and os.path.realpath(path) == os.path.realpath(os.path.join(PACK_DIR, "__init__.py"))

    class _CheckoutAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def _target(self, fullname):
            head, _, rest = fullname.partition(".")
            if head in TOP_LEVEL:
                return f"{PACKAGE}.{fullname}"
            if rest and head != PACKAGE and _is_this_pack(sys.modules.get(head)):
                return f"{PACKAGE}.{rest}"
            return None

        def find_spec(self, fullname, path=None, target=None):
            name = self._target(fullname)
            real = importlib.util.find_spec(name) if name else None
            if real is None:
                return None
            return importlib.util.spec_from_loader(fullname, self, origin=real.origin,
                                                   is_package=real.submodule_search_locations is not None)

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            sys.modules[module.__name__] = importlib.import_module(self._target(module.__name__))

        def get_code(self, fullname):  # `python -m demo.train` runs the pack's module as __main__
            target = self._target(fullname)
            return importlib.util.find_spec(target).loader.get_code(target)

    for _name in list(sys.modules):
        _spec = getattr(sys.modules[_name], "__spec__", None)
        if _name.partition(".")[0] in TOP_LEVEL and not getattr(_spec, "_initializing", False):
            raise ImportError(f"{_name} was imported on its own before fastdit; import fastdit first")
    if PACKAGE not in sys.modules:
        _spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(PACK_DIR, "__init__.py"),
                                                       submodule_search_locations=[PACK_DIR])
        sys.modules[PACKAGE] = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(sys.modules[PACKAGE])
    sys.meta_path.insert(0, _CheckoutAlias())
    sys.modules[__name__] = importlib.import_module(f"{PACKAGE}.fastdit")
