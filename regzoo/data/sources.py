"""Any split as a torch dataset: ImageFolder trees, WebDataset shards, HF ``datasets`` folders (``regzoo.data.locate``
says which). ``open_eval_split`` is validate's; ``open_train_split`` is train.py's.

Evaluation datasets yield ``(image, target, index)`` or a ``SkippedImage`` (``regzoo.data.datasets``), indexed in the
weights' label order exactly as the folder path indexes class folders, and hold only this DDP rank's share: every
image counted exactly once over all ranks (``regzoo.data.sharding``).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from regzoo.data.datasets import build_eval_dataset, infer_label_set, resolve_class_to_idx
from regzoo.data.locate import SHARD_CLASSES_FILE, SplitLocation, locate_split, names_split, read_shard_classes
from regzoo.data.sharding import process_rank_world, rank_indices

_logger = logging.getLogger(__name__)


def class_targets(
        names: list[str] | None, num_classes: int, label_set: str | None, class_map: dict[str, int] | None,
) -> list[int] | None:
    """The classifier index of each dataset label (``names[i]`` -> index), as the folder path indexes class
    folders; None when the data has no names (its labels are classifier indices already)."""
    if names is None:
        if class_map is not None:
            raise ValueError('--class-map needs class names in the data (classes.json beside the shards, '
                             'or a ClassLabel label column)')
        return None
    if class_map is None:
        label_set = infer_label_set(num_classes, names, label_set)
    class_to_idx = resolve_class_to_idx(names, num_classes, label_set, class_map)
    return [class_to_idx[n] for n in names]


def open_eval_split(
        data: str | os.PathLike, transform=None, *, num_classes: int, split: str | None = None,
        label_set: str | None = None, class_map: dict[str, int] | None = None,
        label_file: str | os.PathLike | None = None, num_samples: int | None = None,
        rank: int | None = None, world: int | None = None,
) -> torch.utils.data.Dataset:
    """The evaluation dataset of any kind of split, for DDP rank ``rank`` of ``world`` (default: the process
    group's; every image goes to exactly one rank). Samples: ``(image, target, index)`` or ``SkippedImage``.

    Folders go through ``build_eval_dataset`` unchanged; ``num_samples`` keeps the first N images (sorted
    paths for folders, row order for HF, shard order for shards).
    """
    if rank is None or world is None:
        rank, world = process_rank_world()
    where = locate_split(data, split)
    if label_file is not None and where.kind != 'folder':
        raise ValueError(f'--label-file is for flat image folders; {where.describe()} carries its labels')
    if where.kind == 'shards':
        from regzoo.data.webdataset_source import ShardEvalDataset

        names, _ = read_shard_classes(where.path)
        targets = class_targets(names, num_classes, label_set, class_map)
        _logger.info('%s, %s', where.describe(),
                     f'{len(names)} classes from {SHARD_CLASSES_FILE}' if names else 'cls = classifier index')
        return ShardEvalDataset(where.shards, targets, num_classes, transform, rank=rank, world=world,
                                num_samples=num_samples)
    if where.kind == 'hf':
        from regzoo.data.hf_source import HFEvalDataset, load_hf_split

        table, names = load_hf_split(where)
        dataset = HFEvalDataset(table, class_targets(names, num_classes, label_set, class_map), num_classes,
                                transform, str(where.path))
        _logger.info('%s: %d images', where.describe(), len(dataset))
    else:
        dataset = build_eval_dataset(where.path, transform, num_classes=num_classes, label_set=label_set,
                                     class_map=class_map, label_file=label_file, num_samples=num_samples)
    length = len(dataset) if num_samples is None else min(num_samples, len(dataset))
    if world == 1 and length == len(dataset):
        return dataset
    return torch.utils.data.Subset(dataset, rank_indices(length, rank, world))


@dataclass(frozen=True)
class TrainSplit:
    """A training split: where it is, its class names (None: labels are classifier indices), its image count
    when known, and its dataset (None for folders: training reads them with torchvision's ImageFolder)."""
    location: SplitLocation
    classes: list[str] | None
    num_images: int | None
    dataset: torch.utils.data.Dataset | None


def open_train_split(
        data: str | os.PathLike, split: str, transform=None, *, seed: int = 0, rank: int = 0, world: int = 1,
        reseed: Callable[[int], object] | None = None, shuffle_buffer: int = 2000,
) -> TrainSplit:
    """``split`` of ``data`` for training: an HF split is a map-style ``HFImageDataset`` (``load(index)``);
    shards are a ``ShardTrainDataset`` streaming this rank's share of each epoch (``set_epoch(e)`` first)."""
    where = locate_split(data, split)
    if not names_split(where, split):  # else the train and val splits would be the same images
        raise ValueError(f'{where.describe()} is not split {split!r} by name: training needs a DatasetDict with that '
                         f'split, shards named {split}-*.tar, or a {split}/ folder of shards')
    if where.kind == 'shards':
        from regzoo.data.webdataset_source import ShardTrainDataset

        names, info = read_shard_classes(where.path)
        count = info.get('num_images', {}).get(split) if isinstance(info.get('num_images'), dict) else None
        dataset = ShardTrainDataset(where.shards, transform, seed=seed, rank=rank, world=world,
                                    shuffle_buffer=shuffle_buffer, reseed=reseed, classes=names, num_samples=count)
        return TrainSplit(where, names, count, dataset)
    if where.kind == 'hf':
        from regzoo.data.hf_source import HFImageDataset, load_hf_split

        table, names = load_hf_split(where)
        return TrainSplit(where, names, len(table), HFImageDataset(table, names, transform, str(where.path)))
    return TrainSplit(where, None, None, None)
