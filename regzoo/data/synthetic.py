"""Synthetic labelled images, generated offline and reproducibly from a seed.

The one generator behind ``python -m regzoo``'s sample images, the benchmark's probe images and the
tests' image folders. Class ``k`` of ``n`` has its own hue (``k / n`` round the colour wheel) and its
own stripe direction (``k / n`` of a half turn); each image adds its own pixel noise. Colour alone
separates the classes and texture does too, so a linear probe on random features, or a few epochs
of training, learns them: a top-1 far above chance means the pipeline works.
"""
from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from regzoo.data.transforms import IMAGENET_MEAN, IMAGENET_STD

Size = int | tuple[int, int]  # a square side, or an inclusive (low, high) range for each side of each image


def synthetic_array(label: int, num_classes: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class ``label`` as float64 (height, width, 3) in [0, 1]; draws its noise from ``rng``."""
    if not 0 <= label < num_classes:
        raise ValueError(f'label={label} is invalid: must be in [0, {num_classes})')
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    color = np.array(colorsys.hsv_to_rgb(label / num_classes, 0.8, 0.9))
    angle = math.pi * label / num_classes
    stripes = 0.5 + 0.5 * np.sin(8 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)))
    img = color * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 0.08, (height, width, 3))
    return img.clip(0, 1)


def _side_lengths(size: Size, rng: np.random.Generator) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    low, high = size
    width, height = rng.integers(low, high + 1, 2)  # drawn only for ranges: a fixed size keeps the stream
    return int(height), int(width)


def synthetic_image(label: int, num_classes: int, size: Size, rng: np.random.Generator) -> Image.Image:
    """One RGB image of class ``label`` (8 bits per channel, as a decoded photo)."""
    height, width = _side_lengths(size, rng)
    return Image.fromarray((synthetic_array(label, num_classes, height, width, rng) * 255).astype(np.uint8))


def synthetic_images(n: int, size: Size = 224, num_classes: int = 10, seed: int = 0,
                     ) -> tuple[list[Image.Image], list[int]]:
    """``n`` images of random classes and their labels; the same seed gives the same images."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).tolist()
    return [synthetic_image(k, num_classes, size, rng) for k in labels], labels


def synthetic_batch(
        n: int, size: int = 224, num_classes: int = 10, seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images as one normalised float32 (n, 3, size, size) batch, and their int64 labels.

    The images of ``synthetic_images`` before 8-bit rounding: a model input without a transform.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    images = torch.stack([torch.from_numpy(synthetic_array(int(k), num_classes, size, size, rng).astype(np.float32))
                          for k in labels]).permute(0, 3, 1, 2)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return ((images - mean_t) / std_t).contiguous(), torch.from_numpy(labels)


def write_image_folder(
        root: str | os.PathLike, classes: int | Sequence[str] = 10, per_class: int | Mapping[str, int] = 16,
        size: Size = 32, seed: int = 0, exts: Sequence[str] = ('.png',),
) -> Path:
    """An ImageFolder of synthetic images: ``root/<class>/<i><ext>``, or ``root/<split>/<class>/<i><ext>``
    when ``per_class`` maps split names to image counts (e.g. ``{'train': 16, 'val': 5}``).

    ``classes``: a number of classes (folders ``class00``, ``class01``, ...) or the folder names, in
    label order. Extensions cycle through ``exts`` (several formats in one folder, as real data has).
    """
    root = Path(root)
    names = [f'class{k:02d}' for k in range(classes)] if isinstance(classes, int) else list(classes)
    splits = dict(per_class) if isinstance(per_class, Mapping) else {'': per_class}
    rng = np.random.default_rng(seed)
    for k, name in enumerate(names):
        for split, n in splits.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                synthetic_image(k, len(names), size, rng).save(folder / f'{i:03d}{exts[i % len(exts)]}')
    return root
