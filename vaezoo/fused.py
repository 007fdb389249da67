"""Several training steps in one XLA computation: the fast path of ``steps_per_execution``.

Keras (3.15, TensorFlow backend) runs ``steps_per_execution`` steps per call as a ``tf.while_loop``
around an XLA-compiled step: every step is its own XLA launch, reads every variable in and writes
it back, and pays the loop's ``Optional`` and ``tf.cond`` bookkeeping. For a small model on a CPU
that overhead is a large part of the step. Here the whole block of steps is one XLA computation:
the block's batches are stacked (``[steps, *batch_shape]``) and a ``tf.while_loop`` inside the
compiled function runs the step on each of them.

Same semantics as Keras' loop: each call consumes up to ``steps_per_execution`` batches in order,
runs one step per batch (a short block at the end of the data runs fewer) and returns the logs
after the last one; ``StopIteration`` when the data are exhausted. A block is padded to the full
length (with its last batch, not run) so that one XLA program serves every block of a batch
shape; a smaller final batch starts a new block and compiles once more.

Used by :meth:`vaezoo.BaseVAE.make_train_function` (and ``make_test_function``) when the model is
compiled with XLA and ``steps_per_execution > 1`` on one device and its ``fuse_steps`` is True (MLP
models: XLA on a CPU runs convolutions inside a loop far slower), for the base class's steps, whose
logs are the metric results; see :func:`applies`.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf


def applies(model) -> bool:
    """Whether ``model``'s compile settings take the fused path: XLA, several steps per execution,
    not eager, one replica."""
    return bool(
        model.jit_compile
        and not model.run_eagerly
        and model.steps_per_execution > 1
        and model.distribute_strategy.num_replicas_in_sync == 1
    )


def _signature(batch) -> tuple:
    return tuple(None if t is None else (t.dtype, tuple(t.shape)) for t in tf.nest.flatten(batch))


def _stack(*tensors):
    return None if tensors[0] is None else tf.stack(tensors)


def _row(i):
    return lambda t: None if t is None else t[i]


def make_function(model, step: Callable, logs: Callable[[], dict]) -> Callable:
    """A Keras train/test function running ``step`` on each batch of a block inside one XLA program.

    ``step(batch)`` updates the model (its return value is not used); ``logs()`` returns the step
    logs to report after a block (the metrics' results).
    """
    steps = int(model.steps_per_execution)
    strategy = model.distribute_strategy

    @tf.function(jit_compile=True, reduce_retracing=True)
    def run_block(batches, count):
        def body(i):
            step(tf.nest.map_structure(_row(i), batches))
            return (i + 1,)

        tf.while_loop(lambda i: i < count, body, (tf.constant(0),))
        return logs()

    @tf.function(reduce_retracing=True)
    def block(batches, count):
        return strategy.run(run_block, args=(batches, count))

    def run(batches):
        count = len(batches)
        padded = batches + [batches[-1]] * (steps - count)
        stacked = tf.nest.map_structure(_stack, *padded)
        return block(stacked, tf.constant(count, tf.int32))

    def function(iterator):
        if not isinstance(iterator, tf.data.Iterator):
            # train_on_batch / test_on_batch pass a Python generator of one batch.
            convert = lambda t: None if t is None else tf.convert_to_tensor(t)  # noqa: E731
            batches = [tf.nest.map_structure(convert, data) for _, data in zip(range(steps), iterator)]
            if not batches:
                raise StopIteration
            return run(batches)
        batches = []
        for _ in range(steps):
            try:
                batch = next(iterator)
            except StopIteration:
                break
            if batches and _signature(batch) != _signature(batches[0]):
                run(batches)  # a batch of another shape (the last, smaller one) starts a new block
                batches = []
            batches.append(batch)
        if not batches:
            raise StopIteration
        return run(batches)

    return function
