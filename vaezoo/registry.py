"""The model registry: register, list and build models by name.

Follows timm's registry: a private dict keyed by name, a ``register_model`` decorator,
``list_models`` with fnmatch wildcards, and errors that suggest close names. Third-party
packages add models through the entry-point group ``vaezoo.models``; those plugins are loaded
lazily, once, on the first :func:`get` / :func:`list_models` / :func:`is_model` /
:func:`model_info`. Set ``VAEZOO_DISABLE_PLUGINS=1`` to turn that off.

Example:

>>> import vaezoo
>>> vaezoo.list_models("beta*")
['beta_vae', 'beta_vae_conv']
>>> model = vaezoo.get("beta_vae", beta=4.0, latent_dim=10)

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."vaezoo.models"]
    my_models = "my_package.models"

and ``my_package.models`` registers its builders with ``@vaezoo.register_model`` when imported
(an entry point that names a callable is called instead).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib.metadata
import inspect
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from vaezoo import config as _config
from vaezoo import pretrained as _pretrained

ENTRY_POINT_GROUP = "vaezoo.models"
#: The entry-point group of plugins that register data sets (:func:`vaezoo.sources.register_dataset`).
DATASET_ENTRY_POINT_GROUP = "vaezoo.datasets"
DISABLE_PLUGINS_ENV = "VAEZOO_DISABLE_PLUGINS"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of one model name."""

    name: str
    builder: Callable[..., Any]
    source: str  # the distribution (package) the model comes from, e.g. "vaezoo"
    config_path: Path | None  # the YAML file its defaults come from, if any
    default_config: Mapping[str, Any]  # validated defaults: signature, then YAML, then register_model(config=...)
    schema: Mapping[str, _config.Field]

    @property
    def family(self) -> str:
        return getattr(self.builder, "__name__", type(self.builder).__name__)


_REGISTRY: dict[str, ModelInfo] = {}
_plugins_loaded = False  # the models group; other groups in _groups_loaded
_groups_loaded: set[str] = set()
_current_source: str | None = None  # set while a plugin's entry point is being loaded


def register_model(
    builder: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    config: Mapping[str, Any] | str | Path | None = None,
    override: bool = False,
):
    """Register a model builder (a ``keras.Model`` subclass or a function returning one).

    Args:
        builder: the class or function; its keyword arguments form the config schema.
        name: registry name; defaults to the function's name, or the class name in snake case.
        config: default config (a mapping or a YAML path). Without it, vaezoo's own
            ``zoo_configs/<name>.yaml`` is used when it exists, else the builder's defaults.
        override: replace an existing registration of the same name instead of raising (with a
            warning naming both packages when the replaced model comes from another one).

    Usable bare (``@register_model``) or with arguments (``@register_model(name="x")``).
    """

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or _default_name(fn)
        if key in _REGISTRY and not override:
            raise ValueError(
                f"A model named {key!r} is already registered (from {_REGISTRY[key].source!r}). "
                "Pass override=True to replace it."
            )
        if key in _REGISTRY and _REGISTRY[key].source != _source_of(fn):
            warnings.warn(
                f"vaezoo: package {_source_of(fn)!r} replaces the model {key!r} of package {_REGISTRY[key].source!r}.",
                RuntimeWarning,
                stacklevel=3,
            )
        schema = _config.schema_for(fn)
        merged = _config.defaults(schema)
        config_path = None
        if config is None:
            config_path = _config.builtin_config_path(key) if _source_of(fn) == "vaezoo" else None
            extra = _config.load_yaml(config_path) if config_path else {}
        elif isinstance(config, (str, Path)):
            config_path = Path(config)
            extra = _config.load_yaml(config_path)
        else:
            extra = dict(config)
        merged.update(_config.validate(key, extra, schema))
        _REGISTRY[key] = ModelInfo(
            name=key,
            builder=fn,
            source=_source_of(fn),
            config_path=config_path,
            default_config=merged,
            schema=schema,
        )
        return fn

    if builder is not None:
        return decorator(builder)
    return decorator


def unregister_model(name: str) -> None:
    """Remove a registration (mainly for tests and interactive use)."""
    _REGISTRY.pop(name, None)


def _default_name(fn: Callable[..., Any]) -> str:
    raw = fn.__name__
    if not isinstance(fn, type):
        return raw
    out = []
    for i, ch in enumerate(raw):
        if ch.isupper() and i and (not raw[i - 1].isupper() or (i + 1 < len(raw) and raw[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _source_of(fn: Callable[..., Any]) -> str:
    if _current_source is not None:
        return _current_source
    return (getattr(fn, "__module__", None) or "__main__").split(".")[0]


def load_plugins(force: bool = False, group: str = ENTRY_POINT_GROUP) -> None:
    """Import every entry point of the group ``vaezoo.models`` (or ``group``, e.g. ``vaezoo.datasets``) once.

    A plugin that fails to import (any exception, ``SystemExit`` included) gives a ``RuntimeWarning``
    naming it and is skipped; the zoo keeps working.
    Nothing is loaded when ``VAEZOO_DISABLE_PLUGINS`` is set to a true value.
    """
    global _plugins_loaded, _current_source
    if os.environ.get(DISABLE_PLUGINS_ENV, "").lower() in ("1", "true", "yes"):
        return
    if group != ENTRY_POINT_GROUP:
        if group in _groups_loaded and not force:
            return
        _groups_loaded.add(group)
    elif _plugins_loaded and not force:
        return
    else:
        _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else ep.module
        _current_source = dist
        try:
            loaded = ep.load()
            if callable(loaded) and not isinstance(loaded, type):
                loaded()
        except (Exception, SystemExit) as exc:  # a broken plugin must never break the zoo
            warnings.warn(
                f"vaezoo: plugin {ep.name!r} ({ep.value}) from package {dist!r} failed to load and was "
                f"skipped: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            _current_source = None


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern`` (``"*vae*"``), sorted."""
    load_plugins()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    load_plugins()
    return name in _REGISTRY


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``: builder, source package, config file and defaults.

    Raises:
        KeyError: for an unknown name, suggesting close matches.
    """
    load_plugins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"Unknown model {name!r}.{hint} Registered models: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def get_config(name: str, /, **overrides: Any) -> dict[str, Any]:
    """The full validated config of ``name``: its defaults updated with ``overrides``."""
    info = model_info(name)
    cfg = dict(info.default_config)
    cfg.update(_config.validate(name, overrides, info.schema))
    return cfg


def model_kwargs(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a full config that the model builder takes (training keys removed)."""
    schema = model_info(name).schema
    return {k: v for k, v in config.items() if not schema[k].training}


def get(name: str, /, pretrained: bool | str = False, **overrides: Any):
    """Build the registered model ``name`` from its config, with ``overrides`` applied.

    ``pretrained=True`` loads the shipped weights of ``name``'s default tag, ``pretrained="<tag>"``
    (or ``name="vae.<tag>"``, timm's style, with ``pretrained=True``) those of a tag; the model is
    built with the config those weights were trained with (see :mod:`vaezoo.pretrained` and
    ``vaezoo list --pretrained``), and the sha256 of the weights is checked. ``"vae.<tag>"``
    without ``pretrained`` builds that architecture with fresh weights.

    Training keys (optimizer, learning_rate, ...) are accepted and validated but do not
    change the model; see :func:`get_config` and :func:`vaezoo.training.compile_model`. The
    exception is ``mixed_precision``: the model is built under that Keras dtype policy.
    ``name=`` (keyword) sets the Keras model's name (default: the registry name, after which
    exports are named); the model's ``registry_name`` is always ``name`` (the positional one),
    so a checkpoint knows which registered model it holds. A registered factory function may
    delegate to ``vaezoo.get`` with its keyword arguments.

    Raises:
        KeyError: unknown model name (close names suggested).
        vaezoo.config.ConfigError: unknown key, wrong type or a value out of range (valid keys listed).
        KeyError: ``pretrained`` names a tag that does not exist (the valid ones are listed).
        vaezoo.pretrained.PretrainedError: damaged weights, or overrides the weights do not fit.
    """
    name, tag = _pretrained.split_name(name)
    if not isinstance(pretrained, (bool, str)):
        raise TypeError(f"pretrained must be True, False or a tag (str), got {pretrained!r}.")
    entry = None
    if tag is not None or pretrained:
        model_info(name)  # an unknown model name fails first, with close names
        entry = _pretrained.pretrained_info(f"{name}.{tag}" if tag is not None else name, pretrained)
        overrides = {**entry.config, **overrides}
    keras_name = overrides.pop("name", None)
    cfg = get_config(name, **overrides)
    builder = model_info(name).builder
    kwargs = model_kwargs(name, cfg)
    if _accepts_name(builder):  # the Keras name is the registry name unless given: exports are named after it
        kwargs["name"] = keras_name or name
    elif keras_name is not None:
        raise _config.ConfigError(f"The builder of {name!r} takes no 'name' argument; got name={keras_name!r}.")
    from vaezoo import training  # late: training imports keras, the registry stays light

    with training.precision(cfg.get("mixed_precision", "float32")):
        model = builder(**kwargs)
    try:
        model.registry_name = name
    except AttributeError:  # a builder returning an object that takes no attributes
        pass
    if entry is not None and pretrained:
        _pretrained.load_weights(model, entry)
    return model


def _accepts_name(builder: Callable[..., Any]) -> bool:
    params = inspect.signature(builder).parameters.values()
    return any(p.name == "name" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
