"""HF ``datasets`` folders (``save_to_disk``) as torch datasets: an ``image`` column and a ``label`` column.

Images are read undecoded (``datasets.Image(decode=False)``: the stored bytes, or the file they name) and decoded
by ``regzoo.data.datasets.load_rgb``, exactly as image files are, so an unreadable one is a ``SkippedImage``
in evaluation (logged and counted) rather than an exception inside ``datasets``.
"""
from __future__ import annotations

import io

import torch

from regzoo.data.datasets import eval_sample, load_rgb
from regzoo.data.locate import SplitLocation, require_datasets

REQUIRED_COLUMNS = ('image', 'label')


def load_hf_split(where: SplitLocation):
    """(the split's ``datasets.Dataset`` with undecoded images, its ClassLabel names or None)."""
    datasets = require_datasets()
    table = datasets.load_from_disk(str(where.path))
    if where.split is not None:
        table = table[where.split]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f'{where.describe()} has no {" / ".join(missing)} column (columns: {table.column_names}); '
                         'regzoo reads an "image" and a "label" column (rename_column to match)')
    label = table.features['label']
    names = list(label.names) if isinstance(label, datasets.ClassLabel) else None
    if not isinstance(table.features['image'], datasets.Image):
        raise ValueError(f'{where.describe()}: the "image" column is {table.features["image"]}, not an Image '
                         'feature; cast_column("image", datasets.Image()) before save_to_disk')
    return table.cast_column('image', datasets.Image(decode=False)), names


def row_image(row: dict):
    """A file object of a row's image bytes, or the path it names."""
    image = row['image']
    return io.BytesIO(image['bytes']) if image.get('bytes') is not None else image['path']


def row_name(folder: str, index: int, row: dict) -> str:
    return row['image'].get('path') or f'{folder}[{index}]'


class HFEvalDataset(torch.utils.data.Dataset):
    """``(image, target, index)`` or ``SkippedImage`` per row; ``targets[label]`` is the classifier index of a
    ClassLabel value (None: the label is that index)."""

    def __init__(self, table, targets: list[int] | None, num_classes: int, transform=None, name: str = ''):
        self.table, self.targets, self.num_classes, self.transform, self.name = (
            table, targets, num_classes, transform, name)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int):
        row = self.table[index]
        label = int(row['label'])
        limit = len(self.targets) if self.targets is not None else self.num_classes
        if not 0 <= label < limit:
            raise ValueError(f'{self.name} row {index}: label {label} is outside the {limit} classes')
        target = self.targets[label] if self.targets is not None else label
        return eval_sample(row_image(row), row_name(self.name, index, row), target, index, self.transform)


class HFImageDataset(torch.utils.data.Dataset):
    """A training split: ``load(index) -> (RGB image, label)`` and ``(transform(image), label)`` by index, with
    ``classes`` (the ClassLabel names, or None); an unreadable image raises OSError naming it."""

    def __init__(self, table, classes: list[str] | None, transform=None, name: str = ''):
        self.table, self.classes, self.transform, self.name = table, classes, transform, name

    def __len__(self) -> int:
        return len(self.table)

    def load(self, index: int):
        row = self.table[index]
        try:
            return load_rgb(row_image(row)), int(row['label'])
        except (OSError, SyntaxError, ValueError) as err:
            raise OSError(f'unreadable image {row_name(self.name, index, row)} ({type(err).__name__}: {err}); '
                          'remove or replace it in the dataset') from None

    def __getitem__(self, index: int):
        img, label = self.load(index)
        return (self.transform(img) if self.transform else img), label
