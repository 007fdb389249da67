"""Keras callbacks for vaezoo models."""

from __future__ import annotations

import keras


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
