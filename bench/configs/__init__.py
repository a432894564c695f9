"""Registry of bench configurations: one module per technique in this folder, auto-imported.

A configuration is built from a spec `name` or `name:key=value,key=value` (values parsed as int,
float, bool or str) by the factory registered under `name`:

    @register("mytechnique")
    def mytechnique(threshold=0.1, **options):
        return MyConfig(name="mytechnique", ...)      # a Config (or subclass)

`Config.prepare(model)` returns a patched clone (model patchers override it); `Config.sample(...)`
runs one sampling (samplers override it). The harness, not the configuration, measures cost and
time, so a configuration only has to produce its latent.
"""
import importlib
import inspect
import pkgutil

_FACTORIES = {}
IMPORT_ERRORS = {}  # module name -> message, for configuration modules that failed to import


class Config:
    """One row of the bench table. Override `prepare` and/or `sample` (or pass them as callables).
    `edits_only`: the row needs a source image in the conditioning (an edit model's bench jobs)."""
    edits_only = False

    def __init__(self, name, prepare=None, sample=None):
        self.name = name
        if prepare is not None:
            self.prepare = prepare
        if sample is not None:
            self.sample = sample

    def prepare(self, model):
        """The model to sample with (a patched clone for model patchers); default: unchanged."""
        return model

    def sample(self, model, noise, positive, negative, latent, steps, cfg, seed, callback=None):
        """One sampling run -> latent. Default: ComfyUI's KSampler path, euler / simple; `callback`
        is ComfyUI's per-step callback (bench.step_costs times steps with it)."""
        import comfy.sample
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, latent,
                                   disable_pbar=True, seed=seed, callback=callback)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


def register(name):
    """Decorator: register `factory(**options) -> Config` under `name`."""
    def deco(factory):
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"bench configuration {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory
    return deco


def parse_value(text):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_spec(spec):
    """'name:key=value,key=value' -> (name, {key: value})."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"bad option {item!r} in configuration {spec!r}: expected key=value")
        options[key.strip()] = parse_value(value)
    return name.strip(), options


def available():
    return sorted(_FACTORIES)


def _needs_options(factory) -> bool:
    """Whether the factory has a parameter without a default (euler: steps)."""
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               for p in inspect.signature(factory).parameters.values())


def defaults(edit_model: bool) -> list:
    """Names of the configurations that run at their defaults (no options needed) on a text-to-image
    model, or on an edit model when `edit_model`: the rows of a bench of "everything there is". A
    configuration that fails to build at its defaults raises here rather than dropping out."""
    configs = {name: build(name) for name in available() if not _needs_options(_FACTORIES[name])}
    return [name for name, config in configs.items() if edit_model or not config.edits_only]


def build(spec):
    """The Config for a spec string; its row label is the spec when options were given."""
    name, options = parse_spec(spec)
    if name not in _FACTORIES:
        broken = "".join(f"\n  bench/configs/{m}.py failed to import: {e}" for m, e in IMPORT_ERRORS.items())
        raise ValueError(f"unknown bench configuration {name!r}; available: {', '.join(available())}{broken}")
    try:
        config = _FACTORIES[name](**options)
    except TypeError as e:
        raise ValueError(f"configuration {spec!r}: {e}") from e
    if not isinstance(config, Config):
        raise TypeError(f"the factory of {name!r} returned {type(config).__name__}, not a bench Config")
    if options and config.name == name:
        config.name = spec
    return config


def _import_all():
    for info in pkgutil.iter_modules(__path__):
        try:
            importlib.import_module(f"{__name__}.{info.name}")
        except Exception as e:  # one broken technique must not take the whole bench down
            IMPORT_ERRORS[info.name] = f"{type(e).__name__}: {e}"


_import_all()
