"""Model configs: YAML files, their schema and validation.

A model's config is one flat mapping. Its keys are the keyword arguments of the registered
builder (the model's ``__init__``: architecture, latent size, likelihood, prior, beta, ...) plus
the training keys in :data:`TRAINING_KEYS` (optimizer, learning rate, batch size, epochs, data
set). The schema is read off the builder's signature and type annotations, so a model never
repeats its arguments in a second place.

Example:

>>> import vaezoo
>>> cfg = vaezoo.get_config("vae", latent_dim=16)
>>> cfg["latent_dim"], cfg["optimizer"]
(16, 'adam')
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml


class ConfigError(ValueError):
    """A config key is unknown, or its value has the wrong type or lies outside its valid range."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Valid numbers of a config key: ``low <= v`` (or ``<``), ``v <= high`` (or ``<``); applied to
    every item of a list or tuple value. Floats must also be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def accepts(self, value) -> bool:
        items = value if isinstance(value, (list, tuple)) else [value]
        return all(self._accepts(v) for v in items if isinstance(v, (int, float)) and not isinstance(v, bool))

    def _accepts(self, v) -> bool:
        if not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts) or "finite"


@dataclasses.dataclass(frozen=True)
class OneOf:
    """Valid values of a config key: one of ``choices``."""

    choices: tuple

    def accepts(self, value) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
FINITE = Range()


@dataclasses.dataclass(frozen=True)
class Field:
    """One config key: its type annotation, default (or ``REQUIRED``) and where it goes."""

    name: str
    annotation: Any
    default: Any
    training: bool  # True: used by compile/fit/data; False: passed to the model builder
    constraint: Range | OneOf | None = None  # the valid values, beyond the type


REQUIRED = inspect.Parameter.empty

#: Choices of the training keys, used wherever those keys are read (training, data, CLI).
OPTIMIZER_NAMES = ("adam", "adamw", "rmsprop", "sgd")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
BINARIZE = ("dynamic", "none")
#: ``tf.distribute`` strategies by name (:func:`vaezoo.distribute.strategy`).
STRATEGIES = ("default", "mirrored", "multi_worker")
#: TFLite weight quantizations (:func:`vaezoo.export.tflite`).
QUANTIZATIONS = (None, "float16", "dynamic_range")
#: The environment variable naming the folder of the data files (MNIST, binarized MNIST).
DATA_DIR_ENV = "VAEZOO_DATA_DIR"

COLOR_MODES = ("grayscale", "rgb", None)


class DataSource:
    """Valid values of ``dataset``: a registered data set (the live registry), ``tfds:NAME`` or a path (a
    folder or an ``.npz``/``.npy`` file; read, and checked, when the data is loaded)."""

    def accepts(self, value) -> bool:
        from vaezoo import sources

        return sources.is_source_name(value)

    def suggest(self, value) -> str:
        from vaezoo import sources

        close = difflib.get_close_matches(str(value), sources.dataset_names(), n=3, cutoff=0.5)
        return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""

    def __str__(self) -> str:
        from vaezoo import sources

        return sources.describe_choices()

    def __eq__(self, other) -> bool:
        return isinstance(other, DataSource)

    def __hash__(self) -> int:
        return hash(DataSource)


# Keys that configure training rather than the model. Passed to the CLI and to
# :func:`vaezoo.training.make_optimizer`, never to the model builder.
TRAINING_KEYS: dict[str, tuple[Any, Any, Range | OneOf | None]] = {
    "optimizer": (str, "adam", OneOf(OPTIMIZER_NAMES)),
    "learning_rate": (float, 1e-3, POSITIVE),
    "batch_size": (int, 128, AT_LEAST_1),
    "epochs": (int, 10, AT_LEAST_1),
    # A registered data set, tfds:NAME, a folder of images or an .npz/.npy file (vaezoo.sources).
    "dataset": (str, "mnist", DataSource()),
    # "dynamic" (fresh Bernoulli draw each epoch), "none" (the values as they are, e.g. grey levels in [0, 1]).
    "binarize": (str, "dynamic", OneOf(BINARIZE)),
    # A user's images: resized (centre crop to the aspect ratio, then bilinear) to [height, width].
    "image_size": (list[int] | None, None, AT_LEAST_1),
    # A user's images converted to "grayscale" or "rgb"; None keeps them as stored.
    "color_mode": (str | None, None, OneOf(COLOR_MODES)),
    # The fraction of a user's data held out (fixed seed) to validate on.
    "validation_split": (float, 0.1, Range(0, 1, low_open=True, high_open=True)),
    # Keras dtype policy the model is built under: float32, mixed_float16 or mixed_bfloat16.
    "mixed_precision": (str, "float32", OneOf(PRECISIONS)),
    # XLA: "auto" (on, except under a mirrored tf.distribute strategy), true or false.
    "jit_compile": (bool | str, "auto", OneOf(("auto", True, False))),
    # Training steps per call into TensorFlow: "auto" (32, or 1 under a mirrored strategy), or N.
    "steps_per_execution": (int | str, "auto", None),
}


def schema_for(builder: Callable[..., Any]) -> dict[str, Field]:
    """The config schema of a model builder: its keyword arguments plus the training keys.

    For a class, the ``__init__`` arguments of its bases are included as long as each
    ``__init__`` forwards ``**kwargs`` (stopping at Keras' own classes and at a class marked
    ``_schema_root``, such as :class:`vaezoo.BaseVAE`), so a subclass lists only the arguments it adds.

    Valid ranges come from the ``config_constraints`` class attributes (``{key: Range(...) or
    OneOf(...)}``) of the class and its bases; float keys without one must still be finite.
    """
    if inspect.isclass(builder):
        targets = []
        for klass in builder.__mro__:
            if klass.__module__.split(".")[0] == "keras" or klass is object or vars(klass).get("_schema_root"):
                break
            if "__init__" in vars(klass):
                targets.append(klass.__init__)
                params = inspect.signature(klass.__init__).parameters.values()
                if not any(p.kind is p.VAR_KEYWORD for p in params):
                    break
    else:
        targets = [builder]
    constraints = class_constraints(builder) if inspect.isclass(builder) else {}
    fields: dict[str, Field] = {}
    for target in targets:
        hints = typing.get_type_hints(target)
        for name, param in inspect.signature(target).parameters.items():
            if name == "self" or name in fields or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            fields[name] = Field(name, hints.get(name, Any), param.default, training=False,
                                 constraint=constraints.get(name))
    for name, (annotation, default, constraint) in TRAINING_KEYS.items():
        if name in fields:
            raise TypeError(f"{builder!r} has an argument {name!r} that clashes with a training key")
        fields[name] = Field(name, annotation, default, training=True, constraint=constraint)
    return fields


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any) -> Any:
    """Return ``value`` checked (and minimally converted) against ``annotation``.

    Raises ``TypeError`` if it does not fit. Lists become tuples where a tuple is expected
    (YAML has no tuples) and ints are accepted where floats are.
    """
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option)
            except TypeError:
                continue
        raise TypeError
    if annotation is type(None):
        if value is None:
            return None
        raise TypeError
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if annotation in (int, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise TypeError
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise TypeError
            items = [_coerce(v, a) for v, a in zip(value, args)]
        else:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type) for v in value]
        return tuple(items) if (origin or annotation) is tuple else list(items)
    if origin is dict or annotation is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise TypeError
    return value


def validate(model_name: str, config: Mapping[str, Any], schema: Mapping[str, Field]) -> dict[str, Any]:
    """Check every key of ``config`` against ``schema``; return the converted config.

    Raises:
        ConfigError: naming the unknown key (with close matches) or the mistyped one, and
            listing the valid keys.
    """
    valid = sorted(schema)
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key not in schema:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"Unknown config key {key!r} for model {model_name!r}.{hint} "
                f"Valid keys: {', '.join(valid)}."
            )
        field = schema[key]
        try:
            out[key] = _coerce(value, field.annotation)
        except TypeError:
            raise ConfigError(
                f"Config key {key!r} of model {model_name!r} must be {_type_name(field.annotation)}, "
                f"got {value!r} ({type(value).__name__}). Valid keys: {', '.join(valid)}."
            ) from None
        check_value(model_name, key, out[key], field.constraint or FINITE, raw=value)
    if isinstance(out.get("steps_per_execution"), int) and out["steps_per_execution"] < 1:
        raise ConfigError(f"Config key 'steps_per_execution' of model {model_name!r} must be 'auto' or >= 1, got "
                          f"{out['steps_per_execution']!r}.")
    missing = [k for k, f in schema.items() if f.default is REQUIRED and k not in out]
    if missing:
        raise ConfigError(f"Model {model_name!r} needs config keys {missing}; valid keys: {', '.join(valid)}.")
    return out


def check_value(model_name: str, key: str, value: Any, constraint, raw: Any = None) -> None:
    """Raise :class:`ConfigError` naming ``key``, its valid values and ``value`` unless ``constraint`` accepts it."""
    if constraint is None or constraint.accepts(value):
        return
    each = " (each item)" if isinstance(value, (list, tuple)) and isinstance(constraint, Range) else ""
    shown = value if raw is None else raw
    hint = constraint.suggest(value) if hasattr(constraint, "suggest") else ""
    raise ConfigError(f"Config key {key!r} of model {model_name!r} must be {constraint}{each}, got {shown!r}.{hint}")


def class_constraints(klass: type) -> dict[str, Range | OneOf]:
    """The ``config_constraints`` of ``klass`` and its bases merged (a subclass's entry wins)."""
    out: dict[str, Range | OneOf] = {}
    for base in reversed(klass.__mro__):
        out.update(vars(base).get("config_constraints", {}))
    return out


def check_arguments(klass: type, arguments: Mapping[str, Any]) -> None:
    """Check constructor ``arguments`` against ``klass``'s ``config_constraints`` (values only, not types).

    Families call this on construction (see :class:`vaezoo.BaseVAE`), so ``VAE(num_samples=0)``
    fails with the same message as ``vaezoo.get("vae", num_samples=0)``, from one declaration.
    """
    constraints = class_constraints(klass)
    for key, value in arguments.items():
        if key in constraints and value is not None:
            check_value(klass.__name__, key, value, constraints[key])


def defaults(schema: Mapping[str, Field]) -> dict[str, Any]:
    """The defaults the schema itself carries (from the builder's signature)."""
    return {k: f.default for k, f in schema.items() if f.default is not REQUIRED}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML config file into a dict (an empty file is an empty config)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {_yaml_problem(exc)}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping of keys to values, got {type(data).__name__}.")
    return data


def builtin_config_path(name: str) -> Path | None:
    """Path of ``zoo_configs/<name>.yaml`` shipped with vaezoo, or None if there is none.

    A source checkout has them in ``zoo_configs/`` beside ``vaezoo/``, which wins: a clone imported through
    ``PYTHONPATH`` reads its own configs, even where an editable install of another checkout maps the package
    ``vaezoo.zoo_configs`` to that checkout's folder. An installed vaezoo has them as ``vaezoo.zoo_configs``.
    """
    folder = Path(__file__).resolve().parents[1] / "zoo_configs"
    if not (folder / "__init__.py").is_file():
        try:
            folder = resources.files("vaezoo.zoo_configs")
        except ModuleNotFoundError:
            return None
    resource = folder.joinpath(f"{name}.yaml")
    if resource.is_file():
        return Path(str(resource))
    return None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|nan)$", re.IGNORECASE)


def parse_value(raw: str, key: str = "value") -> Any:
    """A CLI value as a person means it: YAML (``16``, ``[64, 32]``, ``true``, ``mlp``), with every
    number YAML 1.1 leaves as a string read as a float (``1e-3``, ``1E5``).

    Raises:
        ConfigError: malformed YAML, naming ``key``.
    """
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"The value of {key!r} is not valid YAML ({raw!r}): {_yaml_problem(exc)}.") from None
    return _numbers_as_floats(value)


def _numbers_as_floats(value):
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_numbers_as_floats(v) for v in value]
    return value


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse a CLI ``key=value`` override (the value through :func:`parse_value`)."""
    if "=" not in text:
        raise ConfigError(f"Expected key=value, got {text!r}.")
    key, raw = text.split("=", 1)
    key = key.strip()
    return key, parse_value(raw, key)
