"""The base class of every vaezoo model: ``train_step`` / ``test_step`` written once.

A family subclasses :class:`BaseVAE` and fills in two hooks:

* :meth:`BaseVAE.compute_terms` returns per-example terms of its bound (``[B]`` tensors, nats),
  e.g. ``{"reconstruction": ..., "kl": ..., "elbo": ...}``;
* :meth:`BaseVAE.objective` turns the terms into the scalar loss that is minimised.

A family with a second network trained on its own objective (FactorVAE's discriminator) also
fills in :meth:`BaseVAE.auxiliary_variables` and :meth:`BaseVAE.auxiliary_loss`: the same step
then updates those variables with a second optimizer (``compile(auxiliary_optimizer=...)``) from
the same forward pass, and the main optimizer leaves them alone.

The base class does everything else: unpacking and checking inputs, the gradient step, the
``loss`` metric and one ``keras.metrics.Mean`` per name in ``metric_names`` (so ``fit`` shows
the bound's parts), seeds, the ``kl_weight`` variable that :class:`vaezoo.callbacks.KLWarmup`
anneals, and ``get_config``. Plain ``model.compile(optimizer)`` + ``model.fit(dataset)`` then
optimise the family's bound.

Fast by default: :meth:`BaseVAE.compile` turns on XLA (``jit_compile="auto"``) and runs
``steps_per_execution=32`` steps per call into TensorFlow, where that is safe (XLA stays off under
``MirroredStrategy``, where it fails in TF 2.21); pass either to ``compile`` to override. With both,
each block of steps of an MLP model runs as one XLA program (:mod:`vaezoo.fused`). Families that
train slower with XLA on a CPU (``iwae``, ``vq_vae2``, the VAE families' ``architecture: conv``) set
``xla_by_default = False``.

Under ``tf.distribute`` a step on N replicas is the single-device step on the same global batch
(see :mod:`vaezoo.distribute`). With a mixed-precision dtype policy (``mixed_float16`` or
``mixed_bfloat16``) the networks compute in low precision while inputs, distributions,
log-probabilities, KL terms and losses stay float32; ``mixed_float16`` adds Keras' loss scaling.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from vaezoo import config as cfg
from vaezoo import distribute, fused, keras_internals, training


class BaseVAE(keras.Model):
    """Base class: a latent-variable model trained by maximising a lower bound on log p(x).

    Args:
        data_shape: shape of one example, e.g. ``(28, 28, 1)``.
        seed: seed of the model's sampling (reparameterisation noise, ``sample``); None for a
            random one. Weight initialisation follows ``keras.utils.set_random_seed``.
    """

    #: Names of the per-example terms reported as metrics (besides ``loss``), in this order.
    metric_names: tuple[str, ...] = ()
    #: The config schema of a family stops here: each family declares its own arguments.
    _schema_root = True
    #: Whether ``compile(jit_compile="auto")`` picks XLA on one device. False for the families that
    #: train slower with it on a CPU (benchmarks/throughput.py, docs/results.md#training-throughput).
    xla_by_default = True
    #: Whether, with XLA and several steps per execution, a block of steps runs as one XLA program
    #: (vaezoo.fused). Faster for MLPs; XLA on CPU runs convolutions inside a loop far slower.
    fuse_steps = False
    #: What the model reads: ``"images"`` (floats in [0, 1]) or ``"codes"`` (integer code maps).
    input_kind = "images"
    #: Whether the family models p(x | condition): then ``fit`` passes the data's labels (the ``y`` of
    #: ``(x, y)`` batches) to :meth:`compute_terms` as ``condition``; otherwise labels are ignored.
    uses_condition = False

    def __init_subclass__(cls, **kwargs):
        # Every family's constructor checks its arguments against the config constraints it declares
        # (config_constraints, merged over the bases), so a direct VAE(num_samples=0) fails with the
        # message vaezoo.get gives, from the one declaration.
        super().__init_subclass__(**kwargs)
        init = vars(cls).get("__init__")
        if init is None or getattr(init, "_checks_arguments", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args, **kw):
            bound = signature.bind_partial(self, *args, **kw).arguments
            bound.pop("self", None)
            extra = {k: v for k, v in signature.parameters.items() if v.kind is v.VAR_KEYWORD}
            for name in extra:
                bound.update(bound.pop(name, {}))
            cfg.check_arguments(type(self), bound)
            init(self, *args, **kw)

        __init__._checks_arguments = True
        __init__.__signature__ = signature  # what Keras' auto-config and inspect.getfullargspec read
        cls.__init__ = __init__

    def __init__(self, data_shape: tuple[int, ...], seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.data_shape = tuple(int(d) for d in data_shape)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        # Multiplies the KL (or the family's regulariser); KLWarmup anneals it from 0 to 1.
        self.kl_weight = self.add_weight(
            name="kl_weight", shape=(), initializer="ones", trainable=False, dtype="float32"
        )
        # KLWarmup's schedule, applied inside the train step (so every step, whatever
        # steps_per_execution is): w = min(1, start + (1 - start) * step / steps); steps 0 = off.
        self.kl_warmup_steps = self.add_weight(
            name="kl_warmup_steps", shape=(), initializer="zeros", trainable=False, dtype="float32"
        )
        self.kl_warmup_start = self.add_weight(
            name="kl_warmup_start", shape=(), initializer="zeros", trainable=False, dtype="float32"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = {n: keras.metrics.Mean(name=n) for n in self.metric_names}

    # ---- hooks for the families ---------------------------------------------------------------

    def compute_terms(self, x, training: bool = False, seed=None, condition=None) -> dict[str, tf.Tensor]:
        """Per-example terms of the bound, each ``[B]`` (nats). Must include ``metric_names``.

        ``condition``: the batch's labels for a family with ``uses_condition`` (None otherwise).
        """
        raise NotImplementedError

    def objective(self, terms: dict[str, tf.Tensor]) -> tf.Tensor:
        """The scalar loss minimised by ``fit``, from :meth:`compute_terms`' output."""
        raise NotImplementedError

    def gradient_surrogate(self, terms: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """A term added to the loss whose value is 0 but whose gradient completes the estimator.

        The default (reparameterised or exact gradients) adds nothing; see
        :meth:`vaezoo.VAE.gradient_surrogate` for the score-function estimator.
        """
        return tf.constant(0.0)

    def auxiliary_variables(self) -> list:
        """Trainable variables of a second network that the main optimizer leaves alone (default none).

        When there are some, :meth:`train_step` minimises :meth:`auxiliary_loss` over them with
        ``self.auxiliary_optimizer`` in the same step (e.g. FactorVAE's discriminator).
        """
        return []

    def auxiliary_loss(self, terms: dict[str, tf.Tensor]) -> tf.Tensor:
        """The scalar loss of :meth:`auxiliary_variables`, from the step's :meth:`compute_terms` output."""
        raise NotImplementedError(f"{type(self).__name__} has auxiliary variables but no auxiliary_loss.")

    def default_auxiliary_optimizer(self) -> keras.optimizers.Optimizer:
        """The optimizer of :meth:`auxiliary_variables` when ``compile`` is not given one."""
        return keras.optimizers.Adam()

    # ---- inputs and seeds ------------------------------------------------------------------

    def check_inputs(self, x):
        """Return ``x`` as a float32 tensor of shape ``[B, *data_shape]``, or raise naming the problem.

        Float32 even under a mixed-precision policy: the data enter log-probabilities; the
        networks cast their inputs to their own compute dtype.
        """
        x = tf.convert_to_tensor(x)
        if not x.dtype.is_floating:
            raise TypeError(
                f"{self.name} expects floating-point inputs (values in [0, 1] for images), got dtype "
                f"{x.dtype.name}; convert with tf.cast(x, 'float32') / 255."
            )
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"{self.name} expects inputs of shape (batch, {', '.join(map(str, self.data_shape))}), got "
                f"{tuple(x.shape)}. Build the model with data_shape={tuple(x.shape[1:])} or reshape the data."
            )
        x = tf.cast(x, tf.float32)
        if tf.executing_eagerly():
            self.check_values(x.numpy())
        return x

    def value_range(self) -> tuple[float, float] | None:
        """The support of the likelihood: inputs outside it are refused (None: any finite value).

        Each likelihood layer declares its own ``support`` (Bernoulli and continuous Bernoulli: [0, 1]).
        """
        return getattr(getattr(self, "likelihood_layer", None), "support", None)

    def check_values(self, x) -> None:
        """Raise ``ValueError`` unless the array ``x`` is finite and inside :meth:`value_range`.

        Runs on every eager call (``elbo``, ``encode``, ``reconstruct``, ...) and on the first
        batch of ``fit``/``evaluate``; compiled steps cannot raise (XLA drops
        assertions), so later batches are guarded by :class:`vaezoo.callbacks.TerminateOnNonFinite`.
        """
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating) or x.size == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError(f"{self.name} got non-finite inputs ({int((~np.isfinite(x)).sum())} NaN or inf values); "
                             "remove or replace them.")
        support = self.value_range()
        if support is not None:
            low, high = float(x.min()), float(x.max())
            if low < support[0] or high > support[1]:
                hint = " (8-bit images: divide by 255)" if high > 1.0 and high <= 255.0 else ""
                raise ValueError(
                    f"{self.name}'s {self.likelihood} likelihood models values in [{support[0]:g}, {support[1]:g}], "
                    f"but the inputs range over [{low:g}, {high:g}]{hint}."
                )

    @staticmethod
    def check_count(n, what: str = "n") -> int:
        """``n`` as a Python int >= 0, or raise naming it (``sample(n)``)."""
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"{what} must be an integer >= 0, got {n!r} ({type(n).__name__}).")
        if n < 0:
            raise ValueError(f"{what} must be an integer >= 0, got {n}.")
        return int(n)

    def _check_first_batch(self, x):
        """:meth:`check_values` on the first batch of what ``fit``/``evaluate`` were given."""
        if x is None:
            return
        if isinstance(x, tf.data.Dataset):
            for batch in x.take(1):
                self._check_structure(self._unpack(batch))
            return
        if isinstance(x, (np.ndarray, tf.Tensor)) or (isinstance(x, dict) and self.input_kind == "codes"):
            self._check_structure(x)

    def _check_structure(self, x):
        for item in tf.nest.flatten(x):
            self.check_values(np.asarray(item))

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, shuffle=None,
            steps_per_epoch=None, **kwargs):
        """``keras.Model.fit``, with three differences: the first batch is checked
        (:meth:`check_values`); ``shuffle`` defaults to False for a ``tf.data.Dataset`` (it is
        shuffled by its pipeline; Keras would only warn) and True otherwise; the progress bar counts
        true steps when several run per execution."""
        self._check_first_batch(x)
        if shuffle is None:
            shuffle = not isinstance(x, tf.data.Dataset)
        steps = steps_per_epoch or _num_batches(x, batch_size, kwargs.get("validation_split", 0.0))
        callbacks = _callback_list(self, callbacks, verbose, epochs, steps)
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                           shuffle=shuffle, steps_per_epoch=steps_per_epoch, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", steps=None, callbacks=None, **kwargs):
        """``keras.Model.evaluate`` with the first batch checked and true step counts (see :meth:`fit`)."""
        if not keras_internals.is_cached_evaluation(kwargs):
            self._check_first_batch(x)
            callbacks = _callback_list(self, callbacks, verbose, 1, steps or _num_batches(x, batch_size))
        return super().evaluate(x, y, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks,
                                **kwargs)

    def _unpack(self, data):
        """The images (or codes) of a batch: ``x``, ``(x,)``, ``(x, y)``. Labels ``y`` are the condition of a
        family with ``uses_condition`` and ignored by the others; sample weights are refused (every bound
        is a mean over examples: repeat or drop examples to reweight them)."""
        x, _, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} does not weight examples: its loss is the bound's mean over "
                             "the batch. Pass (x,) or (x, labels) batches, without sample_weight.")
        return x

    def _condition(self, data):
        """The labels of a batch for a family with ``uses_condition`` (else None: labels are ignored)."""
        if not self.uses_condition:
            return None
        _, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError(f"{self.name} models p(x | condition): give (images, labels) batches.")
        return y

    def next_seed(self, seed=None):
        """A stateless seed (``int32[2]``) for TFP sampling.

        ``seed=None`` draws from the model's ``SeedGenerator`` (fresh each call, reproducible from
        the model's ``seed``); an int gives the same draw every time.
        """
        if seed is None:
            return keras.random.randint((2,), 0, 2**31 - 1, dtype="int32", seed=self.seed_generator)
        if isinstance(seed, int):
            return tf.constant([seed, 0], dtype=tf.int32)
        return seed

    # ---- the training loop, written once ---------------------------------------------------

    def _record(self, loss, terms):
        self.loss_tracker.update_state(loss)
        for name, tracker in self.term_trackers.items():
            tracker.update_state(tf.reduce_mean(terms[name]))
        return self._metric_logs()

    def _metric_logs(self):
        return distribute.step_logs({m.name: m.result() for m in self.metrics})

    def _loss(self, x, training, condition=None):
        kwargs = {"condition": condition} if condition is not None else {}
        terms = self.compute_terms(x, training=training, seed=self.next_seed(), **kwargs)
        loss = self.objective(terms) + self.gradient_surrogate(terms, training=training)
        if self.losses:
            loss = loss + tf.add_n([tf.cast(l, loss.dtype) for l in self.losses])
        return loss, terms

    def _apply_kl_warmup(self):
        steps = self.kl_warmup_steps
        start = self.kl_warmup_start
        step = tf.cast(self.optimizer.iterations, tf.float32)
        scheduled = tf.minimum(1.0, start + (1.0 - start) * step / tf.maximum(steps, 1.0))
        self.kl_weight.assign(tf.where(steps > 0, scheduled, self.kl_weight))

    def main_variables(self) -> list:
        """The trainable variables of the main optimizer: all but :meth:`auxiliary_variables`."""
        auxiliary = {id(v) for v in self.auxiliary_variables()}
        return [v for v in self.trainable_variables if id(v) not in auxiliary]

    def train_step(self, data):
        x = self.check_inputs(self._unpack(data))
        condition = self._condition(data)
        self._apply_kl_warmup()
        auxiliary = self.auxiliary_variables()
        with tf.GradientTape(persistent=bool(auxiliary)) as tape:
            loss, terms = self._loss(x, training=True, condition=condition)
            # This replica's share (gradients are summed over replicas), then the loss scale of
            # mixed_float16 (identity otherwise).
            scaled = self.optimizer.scale_loss(distribute.scale_loss(loss))
            if auxiliary:
                auxiliary_scaled = self.auxiliary_optimizer.scale_loss(
                    distribute.scale_loss(self.auxiliary_loss(terms)))
        variables = self.main_variables()
        grads = tape.gradient(scaled, variables)
        if auxiliary:
            # Both gradients come from the same forward pass, before either update.
            auxiliary_grads = tape.gradient(auxiliary_scaled, auxiliary)
            del tape
        self.optimizer.apply(grads, variables)
        if auxiliary:
            self.auxiliary_optimizer.apply(auxiliary_grads, auxiliary)
        return self._record(loss, terms)

    def test_step(self, data):
        x = self.check_inputs(self._unpack(data))
        loss, terms = self._loss(x, training=False, condition=self._condition(data))
        return self._record(loss, terms)

    def compile(self, optimizer="adam", jit_compile="auto", steps_per_execution="auto", auxiliary_optimizer=None,
                **kwargs):
        """``keras.Model.compile`` with vaezoo's fast defaults.

        Args:
            optimizer: as in Keras.
            auxiliary_optimizer: the optimizer of :meth:`auxiliary_variables` (a family with a second
                network, such as ``factor_vae``); default :meth:`default_auxiliary_optimizer`.
                Saved with the model and restored by ``keras.models.load_model``.
            jit_compile: ``"auto"`` (default) compiles the step with XLA, except under a mirrored
                ``tf.distribute`` strategy, where XLA fails in TF 2.21 (True there raises). Keras'
                own ``"auto"`` means no XLA on a CPU-only machine.
            steps_per_execution: ``"auto"`` (default) runs 32 training steps per call into
                TensorFlow on one device (small models are dominated by per-step overhead) and 1
                under a mirrored strategy (see :func:`vaezoo.distribute.resolve_compile`). Batch-level
                callbacks then run every 32 steps; the KL warm-up schedule
                (:class:`vaezoo.callbacks.KLWarmup`) is applied inside each step. Pass 1 for Keras'
                behaviour.
            **kwargs: passed to ``keras.Model.compile``.
        """
        jit, steps = distribute.resolve_compile(jit_compile, steps_per_execution, self.distribute_strategy,
                                                xla_by_default=self.xla_by_default)
        if kwargs.get("run_eagerly"):
            jit = False
        super().compile(optimizer=optimizer, jit_compile=jit, steps_per_execution=steps, **kwargs)
        self.auxiliary_optimizer = None
        if self.auxiliary_variables():
            with self.distribute_strategy.scope():
                self.auxiliary_optimizer = (self.default_auxiliary_optimizer() if auxiliary_optimizer is None
                                            else keras.optimizers.get(auxiliary_optimizer))
        elif auxiliary_optimizer is not None:
            raise ValueError(f"{type(self).__name__} has no auxiliary network: auxiliary_optimizer must be None, "
                             f"got {auxiliary_optimizer!r}.")

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and getattr(self, "auxiliary_optimizer", None) is not None:
            config = {**config, "auxiliary_optimizer": keras.saving.serialize_keras_object(self.auxiliary_optimizer)}
        return config

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        if self._fuses_steps("train_step"):
            self.train_function = fused.make_function(self, self.train_step, self._metric_logs)
            return self.train_function
        return super().make_train_function(force)

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        if self._fuses_steps("test_step"):
            self.test_function = fused.make_function(self, self.test_step, self._metric_logs)
            return self.test_function
        return super().make_test_function(force)

    def _fuses_steps(self, step_name: str) -> bool:
        # XLA + several steps per execution on one device: each block of steps is one XLA program
        # (vaezoo.fused). Only for the step written here, whose logs are the metrics' results.
        return self.fuse_steps and fused.applies(self) and getattr(type(self), step_name) is getattr(BaseVAE, step_name)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):  # keras_internals.SYMBOLIC_BUILD_HOOK
        # Keras (3.15, TF backend) overrides (a private hook, checked by vaezoo.keras_internals.check): under a tf.distribute strategy, Keras pulls a batch from
        # a fresh iterator and reduces it over replicas to build the model symbolically. That fails
        # for dict inputs under MultiWorkerMirroredStrategy ("Attempt to convert a value ({'top':
        # PerReplica...}) ... to a Tensor") and advances a reshuffling data set by one epoch, so
        # replicated training would see the data in another order than one device. vaezoo models
        # are built in __init__ and have no compiled losses or metrics: only the optimizer is left.
        self._build_optimizers()

    def _build_optimizers(self):
        with self.distribute_strategy.scope():
            if self.optimizer is not None and not self.optimizer.built:
                self.optimizer.build(self.main_variables())
            auxiliary = getattr(self, "auxiliary_optimizer", None)
            if auxiliary is not None and not auxiliary.built:
                auxiliary.build(self.auxiliary_variables())

    def compile_from_config(self, config):
        """Compile a loaded model as it was saved (Keras skips this for a custom ``compile``)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self._build_optimizers()  # their saved variables are loaded next

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers.values()]

    # ---- export ----------------------------------------------------------------------------

    def endpoints(self, **kwargs) -> dict[str, tuple[Callable[..., dict], dict[str, tf.TensorSpec]]]:
        """The serving signatures :mod:`vaezoo.export` writes, ``name -> (fn, inputs)``.

        ``inputs`` maps each input name to a ``tf.TensorSpec`` (batch dimension ``None``); ``fn``
        takes the inputs as keyword tensors and returns a dict of named tensors, never a
        distribution. ``serving_default`` comes first.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no export endpoints.")

    # ---- config ----------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        registry_name = config.pop("registry_name", None)
        # The sublayers are made in __init__ under the global dtype policy: rebuild a mixed-precision
        # model under its own policy, so a loaded model computes as the saved one did.
        policy = keras.dtype_policies.get(config.get("dtype") or "float32").name
        if policy in training.PRECISIONS:
            with training.precision(policy):
                model = super().from_config(config)
        else:
            model = super().from_config(config)
        if registry_name is not None:
            model.registry_name = registry_name
        return model

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument of the family (its config schema), read from the attribute of
        the same name (keras-hub's rule: each ``__init__`` argument is stored as itself); tuples as lists."""
        base = keras.layers.Layer.get_config(self)
        config = {**base, "data_shape": list(self.data_shape), "seed": self.seed}
        for name, field in _model_schema(type(self)).items():
            if name not in config and hasattr(self, name):
                value = getattr(self, name)
                config[name] = list(value) if isinstance(value, tuple) else value
        if getattr(self, "registry_name", None):
            config["registry_name"] = self.registry_name  # set by vaezoo.get: the checkpoint knows its model
        return config


@functools.lru_cache(maxsize=None)
def _model_schema(klass: type) -> dict:
    return {k: f for k, f in cfg.schema_for(klass).items() if not f.training}


def _num_batches(x, batch_size, validation_split: float = 0.0) -> int | None:
    """Batches per epoch of ``fit``'s input where it is known (a finite data set, arrays), as Keras counts them."""
    if isinstance(x, tf.data.Dataset):
        n = int(x.cardinality())
        return n if n >= 0 else None
    if isinstance(x, (np.ndarray, tf.Tensor)):
        examples = math.floor(int(x.shape[0]) * (1.0 - validation_split))  # Keras' train/validation split
        return -(-examples // int(batch_size or 32))
    return None


class _StepCountingCallbacks(keras.callbacks.CallbackList):
    """Keras' callback list with the end step of a partial last execution clamped to the epoch's
    last step: Keras reports ``begin + steps_per_execution - 1``, so the progress bar overshot
    (``480/469``, negative ETA) with 32 steps per execution."""

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps")
        super().on_train_batch_end(min(batch, steps - 1) if steps else batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        steps = self.params.get("steps")
        super().on_test_batch_end(min(batch, steps - 1) if steps else batch, logs)


def _callback_list(model, callbacks, verbose, epochs, steps):
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    return _StepCountingCallbacks(callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose,
                                  epochs=epochs, steps=steps, model=model)
