"""Keras callbacks for vaezoo models."""

from __future__ import annotations

import math

import keras
import numpy as np


class KLWarmup(keras.callbacks.Callback):
    """Anneal the KL weight linearly from ``start`` to 1 over ``warmup_steps`` optimizer steps.

    The model's objective multiplies its KL (its regulariser) by ``model.kl_weight`` (and a
    beta-VAE by beta as well), so the KL's weight goes from ``start * beta`` to its target.
    Works with every :class:`vaezoo.BaseVAE`; the step count is the optimizer's, so a resumed
    run continues the schedule where it stopped.

    .. math:: w_t = \\min(1, \\; start + (1 - start) \\, t / T)

    Example:

    >>> model.fit(ds, epochs=5, callbacks=[vaezoo.callbacks.KLWarmup(warmup_steps=10_000)])

    Reference: Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016;
    Sønderby et al., "Ladder Variational Autoencoders", NeurIPS 2016.
    """

    def __init__(self, warmup_steps: int, start: float = 0.0):
        super().__init__()
        if warmup_steps < 1 or not 0.0 <= start <= 1.0:
            raise ValueError(f"KLWarmup needs warmup_steps >= 1 and 0 <= start <= 1, got {warmup_steps}, {start}.")
        self.warmup_steps = int(warmup_steps)
        self.start = float(start)

    def weight_at(self, step: int) -> float:
        return min(1.0, self.start + (1.0 - self.start) * step / self.warmup_steps)

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "kl_warmup_steps"):
            raise TypeError(f"KLWarmup needs a model with a kl_weight variable (a vaezoo.BaseVAE), got {type(self.model).__name__}.")
        # The model applies the schedule inside each train step (exact with steps_per_execution > 1).
        self.model.kl_warmup_steps.assign(float(self.warmup_steps))
        self.model.kl_warmup_start.assign(self.start)
        self.model.kl_weight.assign(self.weight_at(int(self.model.optimizer.iterations.numpy())))

    def on_train_end(self, logs=None):
        # Evaluation after training uses the weight reached, not a stale one; later fits without
        # this callback keep that weight.
        self.model.kl_weight.assign(self.weight_at(int(self.model.optimizer.iterations.numpy())))
        self.model.kl_warmup_steps.assign(0.0)


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss (or weights); raised by :class:`TerminateOnNonFinite`.

    Attributes: ``epoch`` and ``step`` (0-based; the step is the last one of the execution in
    which it was seen), ``name`` of the value and the ``value`` itself, ``learning_rate``.
    """

    def __init__(self, epoch: int, step: int | None, name: str, value: float, learning_rate: float | None = None,
                 steps_per_execution: int = 1):
        self.epoch, self.step, self.name, self.value = epoch, step, name, value
        self.learning_rate = learning_rate
        where = f"epoch {epoch + 1}" + ("" if step is None else f", step {step + 1}")
        if step is not None and steps_per_execution > 1:
            where += f" (one of steps {max(step + 2 - steps_per_execution, 1)}-{step + 1}: {steps_per_execution} run per execution)"
        lr = "" if learning_rate is None else f" (now {learning_rate:g})"
        super().__init__(
            f"training diverged: {name} = {value} at {where}. Usual causes: a learning rate too high{lr}; inputs "
            "outside the likelihood's support (Bernoulli likelihoods need values in [0, 1]: divide 8-bit images by "
            "255); a very large beta or gamma. No checkpoint or model was written from the non-finite weights: "
            "the last good checkpoint is kept and can be resumed."
        )


class TerminateOnNonFinite(keras.callbacks.Callback):
    """Stop training at the first non-finite loss or metric, raising :class:`NonFiniteLossError`.

    Unlike Keras' ``TerminateOnNaN``, which only sets ``stop_training`` (and lets checkpoint
    callbacks write the NaN weights at the epoch's end), this raises, so no later callback of
    the epoch runs: put it first in the list. With several steps per execution the loss is
    checked once per execution (the running mean is non-finite from the bad step on).
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, step):
        logs = logs or {}
        for name in sorted(logs, key=lambda k: k != "loss"):  # the loss first
            value = logs[name]
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(number):
                raise NonFiniteLossError(
                    epoch=getattr(self, "_epoch", 0), step=step, name=name, value=number,
                    learning_rate=_learning_rate(self.model),
                    steps_per_execution=int(getattr(self.model, "steps_per_execution", 1) or 1),
                )

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, batch)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, None)


def _learning_rate(model):
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # noqa: BLE001  (a schedule or no optimizer)
        return None


class ImageSummaries(keras.callbacks.Callback):
    """TensorBoard image summaries after every epoch: ``samples`` (from the prior) and
    ``reconstructions`` (each example above its reconstruction), beside Keras' scalars.

    With a 2-D Gaussian latent also ``manifold`` (the decoded lattice, :func:`vaezoo.plots.manifold`), and
    with ``labelled`` examples ``codes`` (their codes coloured by class, :func:`vaezoo.plots.scatter`).

    Args:
        log_dir: the folder of the summaries (``<run>/logs/images``).
        examples: a fixed batch of inputs to reconstruct (images, not code maps; a conditional model's
            ``{"images", "labels"}``).
        num_samples: how many samples to draw (with a fixed seed, so epochs compare).
        labelled: optional ``(images, labels)`` whose codes are scattered by class.
    """

    def __init__(self, log_dir, examples, num_samples: int = 16, labelled=None):
        super().__init__()
        self.log_dir, self.examples, self.num_samples = log_dir, examples, int(num_samples)
        self.labelled = labelled
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf  # late: this module is imported by the light parts of vaezoo too

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        # A conditional model's examples are {"images", "labels"}: reconstructed under their labels.
        inputs = self.examples
        x = tf.convert_to_tensor(inputs["images"] if isinstance(inputs, dict) else inputs, tf.float32)
        recon = self.model.reconstruct(inputs)
        pairs = tf.reshape(tf.stack([x, tf.cast(recon, tf.float32)], axis=1), [-1, *x.shape[1:]])
        with self._writer.as_default():
            tf.summary.image("samples", tf.clip_by_value(self.model.sample(self.num_samples, seed=0), 0.0, 1.0),
                             step=epoch, max_outputs=self.num_samples)
            tf.summary.image("reconstructions", tf.clip_by_value(pairs, 0.0, 1.0), step=epoch,
                             max_outputs=int(pairs.shape[0]))
            self._latent_images(epoch)
        self._writer.flush()

    def _latent_images(self, epoch):
        import tensorflow as tf

        from vaezoo import images, plots

        if plots.has_manifold(self.model):
            grid = images.make_grid(plots.manifold(self.model, steps=15), ncols=15)
            tf.summary.image("manifold", grid[None], step=epoch)
        if self.labelled is not None and hasattr(self.model, "code"):
            x, labels = self.labelled
            inputs = {"images": x, "labels": labels} if getattr(self.model, "uses_condition", False) else x
            points, _ = plots.project_2d(np.asarray(self.model.code(inputs)).reshape(len(labels), -1))
            tf.summary.image("codes", plots.scatter(points, labels)[None], step=epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
