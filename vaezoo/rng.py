"""The models' noise: one place that chooses the random-number algorithm.

TensorFlow's stateless ops default to Philox, and XLA's CPU code for Philox is slow: drawing one training step's
posterior noise under XLA costs far more than the arithmetic it feeds (``benchmarks/rng_speed.py``, docs/results.md
"Run E"), while XLA's ThreeFry draws the same amount many times faster. TensorFlow's own CPU kernels have no ThreeFry
(and are fast with Philox), so the algorithm follows the compilation: a function traced inside :func:`under_xla`
draws with ThreeFry, anything else with TensorFlow's default. The base model's ``train_step``/``test_step`` and
:func:`vaezoo.evaluate.log_likelihood` enter :func:`under_xla` when they are XLA-compiled.

Both are counter-based generators keyed by the same stateless seed (scrambled by
``StatelessRandomGetKeyCounter``), so draws stay reproducible from a seed and independent across seeds; the two
algorithms give different numbers for the same seed, so a run with XLA and one without draw different noise.

>>> with under_xla(True):   # while tracing an XLA-compiled step
...     eps = stateless_normal([4, 2], tf.constant([1, 2]))

References: Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011 (Philox and ThreeFry).
"""

from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

_state = threading.local()
#: ``StatelessRandomNormalV2``'s id of ThreeFry (1 is Philox, 3 the device's choice).
THREEFRY = 2


@contextlib.contextmanager
def under_xla(enabled: bool = True):
    """While Python traces inside this block, :func:`stateless_normal` emits ThreeFry (if ``enabled``)."""
    previous = getattr(_state, "xla", False)
    _state.xla = bool(enabled)
    try:
        yield
    finally:
        _state.xla = previous


def tracing_for_xla() -> bool:
    """Whether the code being traced runs under XLA (inside :func:`under_xla`)."""
    return getattr(_state, "xla", False)


def stateless_normal(shape, seed) -> tf.Tensor:
    """Standard normal float32 draws of ``shape`` from the stateless ``seed`` (int32[2]): ThreeFry under
    :func:`under_xla`, TensorFlow's default algorithm otherwise."""
    if not tracing_for_xla():
        return tf.random.stateless_normal(shape, seed)
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
    return tf.raw_ops.StatelessRandomNormalV2(shape=shape, key=key, counter=counter, alg=THREEFRY)
