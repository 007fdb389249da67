"""A data set added by a plugin: 8x8 images whose brightness is the label (two classes)."""

import numpy as np

from vaezoo.sources import Split, register_dataset


@register_dataset("demo_squares")
def demo_squares(split, data_dir=None):
    n = 40 if split == "train" else 10
    labels = np.arange(n) % 2
    images = np.zeros((n, 8, 8, 1), np.uint8)
    images[:, 2:6, 2:6, 0] = np.where(labels == 1, 255, 100)[:, None, None]
    return Split(images, labels, ("dim", "bright"))
