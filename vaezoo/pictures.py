"""The pictures a run and ``vaezoo sample`` write: samples, reconstructions, traversals, latent plots.

Each writer returns the paths it wrote (PNG grids, atomically written by :mod:`vaezoo.images`), beside
``out_path``: ``samples.png``, ``samples_reconstructions.png``, ``samples_traversal.png``,
``samples_manifold.png`` (a 2-D Gaussian latent, the AEVB paper's figure 4) and ``samples_codes.png``
(test codes coloured by class, PCA when the latent has more than two dimensions).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vaezoo import data, images, plots

log = logging.getLogger("vaezoo")


def conditional(model) -> bool:
    """Whether the model reads labels (``cvae``): its data sets are then loaded with them."""
    return bool(getattr(model, "uses_condition", False))


def first_examples(model, ds, n):
    """The first ``n`` examples of ``ds``: ``(images, model inputs)``, the inputs a dict with the labels for a
    conditional model."""
    batch = next(iter(ds.unbatch().batch(n)))
    if isinstance(batch, (tuple, list)):
        x = batch[0]
        return x, ({"images": x, "labels": batch[1]} if conditional(model) else x)
    return batch, batch


def write_traversal(model, out_path: Path, test_ds) -> list[Path]:
    """``<name>_traversal.png``: one row per latent dimension, swept from -3 to 3 (continuous latents only)."""
    if test_ds is None or not hasattr(model, "traverse"):
        return []
    _, x = first_examples(model, test_ds, 1)
    grid = model.traverse(x)
    path = out_path.with_name(out_path.stem + "_traversal" + out_path.suffix)
    return [Path(images.save_grid(grid.reshape(-1, *grid.shape[2:]), path, ncols=grid.shape[1]))]


def write_samples(model, out_path: Path, test_ds, seed, prior=None, classes=None) -> list[Path]:
    """``samples.png`` (a conditional model's: one row per class of ``classes``, default all), and the
    reconstructions (and uncertainty) of 32 examples of ``test_ds``."""
    if conditional(model):
        classes = list(range(model.num_classes)) if classes is None else classes
        grid = model.class_grid(per_class=10, seed=seed, classes=classes)
        written = [Path(images.save_grid(grid.reshape(-1, *grid.shape[2:]), out_path, ncols=10))]
    else:
        drawn = model.sample(64, seed=seed, prior=prior) if prior is not None else model.sample(64, seed=seed)
        written = [Path(images.save_grid(np.asarray(drawn), out_path))]
    if test_ds is not None:
        x, inputs = first_examples(model, test_ds, 32)
        recon = np.asarray(model.reconstruct(inputs))
        pairs = np.stack([np.asarray(x), recon], axis=1).reshape(-1, *x.shape[1:])  # input, reconstruction, ...
        rec_path = out_path.with_name(out_path.stem + "_reconstructions" + out_path.suffix)
        written.append(Path(images.save_grid(pairs, rec_path, ncols=16)))
        if hasattr(model, "reconstruction_uncertainty"):  # random decoder weights (bayesian_vae)
            mean, std = (np.asarray(v) for v in model.reconstruction_uncertainty(x[:16], num_draws=32, seed=seed))
            scaled = std / max(float(std.max()), 1e-12)  # the largest standard deviation shown white
            rows = np.stack([np.asarray(x[:16]), mean, scaled], axis=0).reshape(-1, *x.shape[1:])
            unc_path = out_path.with_name(out_path.stem + "_uncertainty" + out_path.suffix)
            written.append(Path(images.save_grid(rows, unc_path, ncols=16)))
    return written


def _labelled(cfg, data_dir=None, seed=None):
    split = data.sources.validation_split_name(cfg["dataset"])
    return data.from_config(cfg, split, data_dir=data_dir, seed=seed, shuffle=False, labels=True)


def labelled_examples(cfg, data_dir=None, seed=None, n: int = 1000):
    """Up to ``n`` validation ``(images, labels)`` for the TensorBoard code scatter, or None without labels."""
    try:
        labelled = _labelled(cfg, data_dir, seed)
    except (FileNotFoundError, ValueError, data.DataError):
        return None  # a data set without labels: no scatter
    x, y = next(iter(labelled.unbatch().batch(n)))
    return x, np.asarray(y)


def write_latent_plots(model, out_path: Path, cfg, data_dir=None, seed=None) -> list[Path]:
    """The manifold grid of a 2-D Gaussian latent, and the scatter of test codes by class when the data set
    has labels (skipped, with the reason logged as a warning, when it has none)."""
    written = []
    if plots.has_manifold(model):
        path = out_path.with_name(out_path.stem + "_manifold" + out_path.suffix)
        written.append(Path(images.save_grid(plots.manifold(model, steps=15), path, ncols=15)))
    if not hasattr(model, "code") or getattr(model, "input_kind", "images") != "images":
        return written
    try:
        labelled = _labelled(cfg, data_dir, seed)
    except (FileNotFoundError, ValueError, data.DataError) as exc:
        log.warning(f"no code scatter: {exc}")
        return written
    codes, labels = plots.codes_and_labels(model, labelled, limit=2000)
    points, explained = plots.project_2d(codes)
    path = out_path.with_name(out_path.stem + "_codes" + out_path.suffix)
    written.append(Path(plots.save_scatter(points, labels, path, class_names=getattr(labelled, "class_names", None))))
    if codes.shape[1] > 2:
        log.info(f"code scatter: first two principal components of {codes.shape[1]} latents "
                 f"({explained:.0%} of the codes' variance)")
    return written
