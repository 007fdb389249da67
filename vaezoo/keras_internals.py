"""The three Keras internals vaezoo relies on, each behind one name here, and a check that they still exist.

vaezoo pins Keras (``pyproject.toml``) and overrides or calls three things that are not Keras' public API:

* ``SYMBOLIC_BUILD_HOOK`` (``Trainer._maybe_symbolic_build(iterator, data_batch)``): ``fit``/``evaluate``
  call it before the first step to build the model symbolically from a batch. ``BaseVAE`` overrides it to
  build only the optimizers (its models are built in ``__init__``): Keras' version pulls a batch from a fresh
  iterator, which fails for dict inputs under MultiWorkerMirroredStrategy and advances a reshuffling data set.
* :func:`is_cached_evaluation` (``evaluate(..., _use_cached_eval_dataset=True)``): how ``fit`` runs its
  validation pass over the data set it already holds; ``BaseVAE.evaluate`` skips its first-batch check then.
* :func:`track_after_build` (``Layer._tracker``: ``locked``, ``unlock``, ``untrack``, ``lock``): adding a
  sub-layer to a built model, as Keras' own ``Layer.quantize`` does (``VAE.attach_sampler``).

:func:`check` returns what of these the installed Keras lacks; ``tests/test_keras_internals.py`` fails with
that list on a Keras upgrade that moves one of them, instead of a model that silently trains differently.
"""

from __future__ import annotations

import contextlib
import inspect

import keras

#: The Keras version these internals were read from (``pyproject.toml`` pins it).
CHECKED_KERAS_VERSION = "3.15.1"

#: The name of the trainer's pre-fit symbolic build hook that ``BaseVAE`` overrides.
SYMBOLIC_BUILD_HOOK = "_maybe_symbolic_build"

_CACHED_EVAL_KWARG = "_use_cached_eval_dataset"


def is_cached_evaluation(evaluate_kwargs) -> bool:
    """Whether ``Model.evaluate`` was called by ``fit`` for its validation pass (over its cached data set)."""
    return bool(evaluate_kwargs.get(_CACHED_EVAL_KWARG))


@contextlib.contextmanager
def track_after_build(layer):
    """Let ``layer`` (built, so its tracker is locked) take new tracked attributes in the ``with`` block.

    >>> with track_after_build(model):           # doctest: +SKIP
    ...     untrack(model, model.old_sampler)
    ...     model.sampler = new_layer              # tracked: saved and loaded with the model
    """
    tracker = layer._tracker
    was_locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def untrack(layer, value) -> None:
    """Stop tracking ``value`` (a sub-layer about to be replaced) in ``layer``; inside :func:`track_after_build`."""
    layer._tracker.untrack(value)


def check() -> list[str]:
    """What the installed Keras lacks of the internals above (empty when all are there, as in 3.15.1)."""
    problems = []
    trainer = next((c for c in keras.Model.__mro__ if SYMBOLIC_BUILD_HOOK in vars(c)), None)
    if trainer is None:
        problems.append(f"keras.Model has no {SYMBOLIC_BUILD_HOOK}(): BaseVAE's override would never run")
    else:
        params = list(inspect.signature(getattr(trainer, SYMBOLIC_BUILD_HOOK)).parameters)
        if params != ["self", "iterator", "data_batch"]:
            problems.append(f"{trainer.__name__}.{SYMBOLIC_BUILD_HOOK} takes {params[1:]}, not [iterator, data_batch]")
        for method in ("fit", "evaluate"):
            if f"self.{SYMBOLIC_BUILD_HOOK}(" not in inspect.getsource(getattr(trainer, method)):
                problems.append(f"{trainer.__name__}.{method} no longer calls {SYMBOLIC_BUILD_HOOK}")
    fit_owner = next(c for c in keras.Model.__mro__ if "fit" in vars(c))
    if f"{_CACHED_EVAL_KWARG}=True" not in inspect.getsource(fit_owner.fit):
        problems.append(f"keras' fit no longer passes {_CACHED_EVAL_KWARG}=True to evaluate for validation")
    tracker = getattr(keras.layers.Dense(1), "_tracker", None)
    missing = [a for a in ("locked", "lock", "unlock", "untrack") if not hasattr(tracker, a)]
    if missing:
        problems.append(f"keras.layers.Layer._tracker lacks {', '.join(missing)}")
    return problems
