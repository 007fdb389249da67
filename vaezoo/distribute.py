"""tf.distribute support: strategies by name, and the few cross-replica steps the models need.

vaezoo trains on TensorFlow's own distributed engine. Build and compile the model inside a
strategy's scope and call ``fit`` as usual:

>>> strategy = vaezoo.distribute.strategy("mirrored")      # all local devices
>>> with strategy.scope():
...     model = vaezoo.get("vae")
...     model.compile(keras.optimizers.Adam(1e-3))
>>> model.fit(dataset)     # the global batch is split over the replicas

A step on N replicas is the single-device step on the same global batch:

* each replica's loss is its per-example mean divided by N, and the optimizer sums the replicas'
  gradients, so the update is the gradient of the global-batch mean (:func:`scale_loss`);
* random noise (the reparameterisation's epsilon) is drawn for the whole global batch from the
  step's seed and each replica takes its own rows (:func:`replica_rows`), so example i gets the
  same noise on one device or on N;
* statistics that update state (a VQ codebook's EMA, a score-function baseline) are reduced over
  replicas before the update (:func:`sum_over_replicas`, :func:`mean_over_replicas`,
  :func:`gather_batch`), so every replica holds the same state.

Several hosts: ``strategy("multi_worker")`` is ``tf.distribute.MultiWorkerMirroredStrategy``; each
worker reads the cluster and its own role from the ``TF_CONFIG`` environment variable (see the
README). XLA (``jit_compile=True``) and ``steps_per_execution > 1`` both fail inside a mirrored
strategy with TF 2.21 / Keras 3.15, so :meth:`vaezoo.BaseVAE.compile` turns them off there by
default and refuses them when asked for explicitly (:func:`resolve_compile`).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from vaezoo import config as _config

STRATEGIES = _config.STRATEGIES


def strategy(name: str = "default") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name`` (one of :data:`STRATEGIES`).

    ``default`` is one device, ``mirrored`` every local device (``MirroredStrategy``),
    ``multi_worker`` every device of every worker named in ``TF_CONFIG``
    (``MultiWorkerMirroredStrategy``; create it before any other TensorFlow op runs).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; valid choices: {', '.join(STRATEGIES)}.")


def peers() -> list[str]:
    """The other tasks of the ``TF_CONFIG`` cluster (``worker 1 at host:port``), for messages."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task = config.get("task", {})
        out = []
        for kind, addresses in config.get("cluster", {}).items():
            for index, address in enumerate(addresses):
                if (kind, index) != (task.get("type"), task.get("index")):
                    out.append(f"{kind} {index} at {address}")
        return out
    except (ValueError, AttributeError, TypeError):
        return []


def is_mirrored(strategy_: tf.distribute.Strategy) -> bool:
    """True for ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy`` (the strategies XLA fails under)."""
    return isinstance(strategy_, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))


#: Steps per call into TensorFlow that ``steps_per_execution="auto"`` picks on one device.
FAST_STEPS_PER_EXECUTION = 32
#: Whether ``jit_compile="auto"`` picks XLA on one device. XLA pays a compile of several seconds
#: per model for faster steps; vaezoo's own unit tests (tiny models, few steps) set this False.
AUTO_JIT_COMPILE = True


def resolve_compile(jit_compile, steps_per_execution, strategy_: tf.distribute.Strategy,
                    xla_by_default: bool = True) -> tuple[bool, int]:
    """Resolve ``jit_compile`` and ``steps_per_execution`` (each ``"auto"`` or a value) for ``strategy_``.

    ``"auto"`` is XLA (for a model whose ``xla_by_default`` is True: the families measured faster
    with it) and :data:`FAST_STEPS_PER_EXECUTION` steps per execution on one device, and
    no XLA with one step per execution under a mirrored strategy, where (Keras 3.15, TF 2.21) an
    XLA-compiled step fails with a device-placement error and ``steps_per_execution > 1`` fails with
    "You must feed a value for placeholder tensor" (a plain ``keras.Sequential`` too). Asking for
    either explicitly under a mirrored strategy raises, naming the cause.
    """
    if jit_compile not in ("auto", True, False):
        raise ValueError(f"jit_compile must be 'auto', True or False, got {jit_compile!r}.")
    if steps_per_execution != "auto" and (isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, int)
                                          or steps_per_execution < 1):
        raise ValueError(f"steps_per_execution must be 'auto' or an integer >= 1, got {steps_per_execution!r}.")
    mirrored = is_mirrored(strategy_)
    name = type(strategy_).__name__
    if mirrored and jit_compile is True:
        raise ValueError(
            f"jit_compile=True is not supported under {name}: XLA-compiled steps fail there in TensorFlow 2.21 with "
            "a device-placement error. Use jit_compile='auto' or False with this strategy, or train on one device "
            "to use XLA."
        )
    if mirrored and steps_per_execution not in ("auto", 1):
        raise ValueError(
            f"steps_per_execution={steps_per_execution} is not supported under {name}: Keras 3.15 with TensorFlow "
            "2.21 fails there ('You must feed a value for placeholder tensor'). Use steps_per_execution='auto' or 1 "
            "with this strategy."
        )
    jit = (AUTO_JIT_COMPILE and xla_by_default and not mirrored) if jit_compile == "auto" else jit_compile
    if steps_per_execution == "auto":
        steps_per_execution = 1 if mirrored else FAST_STEPS_PER_EXECUTION
    return jit, steps_per_execution


def _context():
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def num_replicas() -> int:
    """Replicas training in sync (1 outside a strategy or in cross-replica context)."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else int(ctx.num_replicas_in_sync)


def scale_loss(loss: tf.Tensor) -> tf.Tensor:
    """This replica's share of the global loss: ``loss / num_replicas``, since the optimizer sums gradients."""
    n = num_replicas()
    return loss if n == 1 else loss * tf.cast(1.0 / n, loss.dtype)


def sum_over_replicas(*tensors):
    """All-reduce (sum) across replicas under a tf.distribute strategy; identity otherwise."""
    ctx = _context()
    return tensors if ctx is None else tuple(ctx.all_reduce("sum", list(tensors)))


def mean_over_replicas(tensor: tf.Tensor) -> tf.Tensor:
    """All-reduce (mean) across replicas; identity outside a strategy."""
    ctx = _context()
    return tensor if ctx is None else ctx.all_reduce("mean", tensor)


def gather_batch(tensor: tf.Tensor) -> tf.Tensor:
    """The global batch: every replica's rows of ``tensor`` concatenated in replica order (axis 0)."""
    ctx = _context()
    return tensor if ctx is None else ctx.all_gather(tensor, axis=0)


def replica_rows(draw, batch_size, axis: int = 0) -> tf.Tensor:
    """This replica's rows of a tensor drawn for the whole global batch.

    ``draw(global_batch_size)`` must return a tensor whose ``axis`` has that length and that
    depends only on its argument and on values equal on every replica (a stateless seed). The
    result is the slice that belongs to this replica's ``batch_size`` examples, so per-example
    randomness does not depend on how the batch is split over replicas.
    """
    ctx = _context()
    if ctx is None:
        return draw(batch_size)
    sizes = ctx.all_gather(tf.reshape(tf.cast(batch_size, tf.int32), [1]), axis=0)  # [num_replicas]
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    start = tf.reduce_sum(sizes[:replica])
    rows = draw(tf.reduce_sum(sizes))
    begin = tf.tensor_scatter_nd_update(tf.zeros([rows.shape.rank], tf.int32), [[axis]], [start])
    size = tf.tensor_scatter_nd_update(tf.fill([rows.shape.rank], -1), [[axis]], [tf.cast(batch_size, tf.int32)])
    return tf.slice(rows, begin, size)


def step_logs(logs: dict) -> dict:
    """A train/test step's metric values, shaped for Keras' cross-replica reduction.

    Keras 3 reduces step outputs over several workers with ``strategy.reduce("MEAN", v, axis=0)``,
    which fails on scalars ("Invalid reduction dimension 0 for input with 0 dimensions",
    tensorflow/tensorflow#72388), so under multi-worker training each value becomes shape ``[1]``.
    Epoch logs and ``History`` still hold the metrics' synchronised scalar results.
    """
    strategy = tf.distribute.get_strategy()
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and in_multi_worker_mode():
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs
