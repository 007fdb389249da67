"""Registries of the parts a latent-variable model is made of: posteriors, priors, likelihoods.

timm's registry for models, applied to distribution layers: a private dict keyed by name filled by
a decorator, lookups that suggest close names, and a live set of choices that config validation
reads when it checks a value (so a plugin's entry counts as soon as it is registered).

Each registered layer class declares the config keys it reads from a model's config, with their
valid values, in ``config_keys = {model_key: (constructor_argument, constraint)}``. A family's schema
takes those constraints from the registry (:func:`constraints`), and :meth:`ComponentRegistry.build`
checks them again when it builds a component, so a layer built outside ``vaezoo.get`` is checked too.

Example (a plugin adding a prior, usable as ``vaezoo.get("vae", prior="laplace")``):

>>> import tensorflow as tf, tensorflow_probability as tfp
>>> from vaezoo import layers
>>> @layers.register_prior("laplace")
... class LaplacePrior(layers.Prior):
...     def call(self, inputs=None):
...         zeros = tf.zeros([self.latent_dim])
...         return tfp.distributions.Independent(tfp.distributions.Laplace(zeros, 1.0), 1)
...     def from_noise(self, noise):          # z from standard normal noise, for sample()
...         return tfp.distributions.Laplace(0.0, 1.0).quantile(tfp.distributions.Normal(0.0, 1.0).cdf(noise))
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from vaezoo import config as cfg


class ComponentRegistry(Mapping):
    """Name -> layer class for one kind of component (``"posterior"``, ``"prior"``, ``"likelihood"``).

    A read-only mapping in registration order (``list(PRIORS)`` is the valid names), filled by
    :meth:`register`.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, type] = {}

    def register(self, name: str, *, override: bool = False) -> Callable[[type], type]:
        """Class decorator: register the layer class under ``name``.

        The class may declare ``config_keys`` (see the module docstring). Registering a taken name
        raises unless ``override=True`` (then a warning names the replaced class).
        """

        def decorator(klass: type) -> type:
            if name in self._entries and not override:
                raise ValueError(f"A {self.kind} named {name!r} is already registered ({self._entries[name].__name__}); "
                                 "pass override=True to replace it.")
            if name in self._entries:
                warnings.warn(f"vaezoo: the {self.kind} {name!r} ({self._entries[name].__name__}) is replaced by "
                              f"{klass.__name__}.", RuntimeWarning, stacklevel=2)
            for key, spec in getattr(klass, "config_keys", {}).items():
                if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)):
                    raise TypeError(f"{klass.__name__}.config_keys[{key!r}] must be (constructor_argument, constraint), "
                                    f"got {spec!r}.")
            klass.registered_name = name
            self._entries[name] = klass
            return klass

        return decorator

    def unregister(self, name: str) -> None:
        """Remove a registration (tests and interactive use)."""
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> type:
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"Unknown {self.kind} {name!r}.{hint} Valid choices: {', '.join(self._entries)}.")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ComponentRegistry({self.kind!r}: {', '.join(self._entries)})"

    def choice(self) -> "Registered":
        """The constraint of the config key that names a component: one of the live names."""
        return Registered(self)

    def build(self, component: str, options: Mapping[str, Any], /, **fixed) -> Any:
        """Build the registered ``component``: ``fixed`` arguments plus the ones it reads from ``options``.

        ``options`` is the model's config (every key); each key the class lists in ``config_keys`` is
        checked against its constraint and passed under its constructor name; keys of other
        components are ignored.

        Raises:
            ValueError: an unknown name (close names and the valid choices listed).
            vaezoo.ConfigError: a value the component does not accept, naming the key and the valid values.
        """
        klass = self[component]
        kwargs = dict(fixed)
        for key, (argument, constraint) in getattr(klass, "config_keys", {}).items():
            if key not in options:
                continue
            value = options[key]
            if constraint is not None and not constraint.accepts(value):
                raise cfg.ConfigError(f"Config key {key!r} of the {self.kind} {component!r} must be {constraint}, "
                                      f"got {value!r}.")
            kwargs[argument] = value
        return klass(**kwargs)


class Registered(cfg.OneOf):
    """Valid values of a config key that names a component: the registry's names *when checked*."""

    def __init__(self, registry: ComponentRegistry):
        object.__setattr__(self, "registry", registry)

    @property
    def choices(self) -> tuple:  # type: ignore[override]
        return tuple(self.registry)

    def __eq__(self, other) -> bool:
        return isinstance(other, Registered) and other.registry is self.registry

    def __hash__(self) -> int:
        return id(self.registry)

    def __repr__(self) -> str:
        return f"Registered({self.registry.kind!r})"


def constraints(*registries: ComponentRegistry) -> dict[str, Any]:
    """The constraints of every config key the registered components declare, ``{key: constraint}``.

    A family puts these in its ``config_constraints``, so its schema checks (for instance)
    ``prior_components`` with the range the mixture prior declares. Two components that declare
    the same key must agree on its constraint.
    """
    out: dict[str, Any] = {}
    for registry in registries:
        for klass in registry.values():
            for key, (_, constraint) in getattr(klass, "config_keys", {}).items():
                if key in out and out[key] != constraint:
                    raise TypeError(f"Config key {key!r} is declared with two constraints ({out[key]} and {constraint}).")
                out[key] = constraint
    return out
