"""Pictures of a latent space: the manifold grid of a 2-D latent and the scatter of codes by class.

The manifold grid decodes z on a lattice: for a standard normal prior over two latents, the lattice
is the Gaussian quantile of an evenly spaced grid on the unit square,

.. math:: z_{ij} = (\\Phi^{-1}(u_j), \\Phi^{-1}(u_i)), \\quad u_i = (i + 1/2) / n,

so that every cell holds the same prior mass (Kingma & Welling 2014, figure 4). The scatter places
each test example at its code (the posterior mean), projected to two dimensions by principal
components when the latent has more, and colours it by its label.

Example:

>>> import vaezoo
>>> from vaezoo import plots
>>> model = vaezoo.get("vae", latent_dim=2)
>>> images = plots.manifold(model, steps=10)           # [100, 28, 28, 1], rows: z2, columns: z1
>>> points, explained = plots.project_2d(model.code(x)) # doctest: +SKIP
>>> plots.save_scatter(points, labels, "codes.png")     # doctest: +SKIP

Rendered with Pillow (no plotting library needed).

References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (figure 4).
"""

from __future__ import annotations

import os
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageDraw

from vaezoo import fileio

#: Colours of the classes (the ten of matplotlib's "tab10"), cycled beyond ten classes.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def lattice(steps: int) -> np.ndarray:
    """The 2-D lattice ``[steps * steps, 2]`` of equal prior mass under N(0, I): row-major, row i holds
    z2 = Phi^-1(u_i) (top row the largest), column j z1 = Phi^-1(u_j)."""
    steps = int(steps)
    if steps < 2:
        raise ValueError(f"a manifold lattice needs steps >= 2, got {steps}.")
    u = (np.arange(steps) + 0.5) / steps
    values = np.array([NormalDist().inv_cdf(v) for v in u], dtype="float32")
    z1, z2 = np.meshgrid(values, values[::-1])
    return np.stack([z1.ravel(), z2.ravel()], axis=-1)


def has_manifold(model) -> bool:
    """Whether :func:`manifold` applies: a 2-D latent with a Gaussian posterior and the standard normal prior
    (and no labels to decode under: a conditional model's picture is its class grid)."""
    return (getattr(model, "latent_dim", None) == 2 and not getattr(model, "uses_condition", False) and getattr(model, "prior", None) == "normal"
            and getattr(model, "posterior", None) == "gaussian" and hasattr(model, "decode"))


def manifold(model, steps: int = 15) -> np.ndarray:
    """The decoded lattice ``[steps * steps, *data_shape]`` of a model with a 2-D continuous latent
    (likelihood means, in the order of :func:`lattice`)."""
    if not has_manifold(model):
        raise ValueError(f"a manifold grid decodes a 2-D Gaussian latent under the standard normal prior; "
                         f"{type(model).__name__} has latent_dim={getattr(model, 'latent_dim', None)!r} and prior="
                         f"{getattr(model, 'prior', None)!r}. Train with latent_dim=2 (e.g. --set latent_dim=2).")
    return np.asarray(model.decode(lattice(steps)))


def project_2d(codes) -> tuple[np.ndarray, float]:
    """Codes ``[N, D]`` as 2-D points ``[N, 2]``, and the fraction of their variance the points keep:
    the codes themselves when D = 2, their first two principal components when D > 2."""
    codes = np.asarray(codes, dtype="float64")
    if codes.ndim != 2 or codes.shape[1] < 2 or codes.shape[0] < 2:
        raise ValueError(f"project_2d expects codes [N >= 2, D >= 2], got shape {codes.shape}.")
    if codes.shape[1] == 2:
        return codes.astype("float32"), 1.0
    centred = codes - codes.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    total = float(np.sum(singular**2))
    explained = float(np.sum(singular[:2] ** 2) / total) if total > 0 else 1.0
    return (centred @ vt[:2].T).astype("float32"), explained


def scatter(points, labels, size: int = 480, radius: int = 2, class_names=None) -> np.ndarray:
    """A uint8 RGB picture ``[size, size + legend, 3]`` of 2-D ``points`` coloured by integer ``labels``,
    with a legend of the classes (``class_names`` or the label values) on the right."""
    points = np.asarray(points, dtype="float64")
    labels = np.asarray(labels).reshape(-1)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"scatter expects points [N, 2], got shape {points.shape}.")
    if labels.shape[0] != points.shape[0]:
        raise ValueError(f"scatter got {points.shape[0]} points but {labels.shape[0]} labels.")
    classes = np.unique(labels)
    margin, legend = 12, 110
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    pixels = margin + (points - low) / span * (size - 2 * margin)
    pixels[:, 1] = size - pixels[:, 1]  # y grows upwards
    image = Image.new("RGB", (size + legend, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for (px, py), label in zip(pixels, labels):
        colour = PALETTE[int(np.searchsorted(classes, label)) % len(PALETTE)]
        draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=colour)
    for i, label in enumerate(classes):
        y = margin + 16 * i
        draw.rectangle((size + 8, y, size + 18, y + 10), fill=PALETTE[i % len(PALETTE)])
        name = class_names[int(label)] if class_names is not None and 0 <= int(label) < len(class_names) else label
        draw.text((size + 24, y - 1), str(name), fill=(0, 0, 0))
    return np.asarray(image)


def save_scatter(points, labels, path: str | os.PathLike, **kwargs) -> str:
    """Write :func:`scatter` as a PNG (folders created, replaced atomically); returns the path."""
    picture = Image.fromarray(scatter(points, labels, **kwargs))
    with fileio.atomic_path(path) as tmp:
        picture.save(tmp)
    return os.fspath(path)


def codes_and_labels(model, dataset, limit: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The codes (posterior means, ``model.code``) and labels of up to ``limit`` examples of a labelled
    ``dataset`` of ``(images, labels)`` batches."""
    if not hasattr(model, "code"):
        raise ValueError(f"{type(model).__name__} has no continuous code to scatter.")
    codes, labels, seen = [], [], 0
    for batch in dataset:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("codes_and_labels needs (images, labels) batches (data.load(..., labels=True)).")
        x, y = batch[0], batch[1]
        inputs = {"images": x, "labels": y} if getattr(model, "uses_condition", False) else x  # cvae: q(z|x, y)
        codes.append(np.asarray(model.code(inputs)).reshape(len(y), -1))
        labels.append(np.asarray(y).reshape(-1))
        seen += len(labels[-1])
        if seen >= limit:
            break
    if not codes:
        raise ValueError("codes_and_labels got an empty dataset.")
    return np.concatenate(codes)[:limit], np.concatenate(labels)[:limit]
