"""train.py's two splits of any kind: ImageFolder trees, WebDataset shards, HF ``datasets`` folders.

``--data-dir`` is whatever ``regzoo.data.locate.locate_split`` resolves; ``--train-split`` / ``--val-split`` name a
folder under it, its ``<split>-*.tar`` shards (or a ``<split>/`` folder of shards) or a DatasetDict split.

- folders and HF datasets are map-style: ``GlobalBatchSampler`` orders them, so a resume continues mid-epoch
  exactly (``regzoo.training.loaders``);
- shards stream: each rank reads its shards of the epoch's (seed, epoch) order, there is no sampler, an epoch
  is ``num_images // global batch`` updates and ends on every rank when any rank's stream runs dry
  (``engine.train_one_epoch``); a resume restarts the stopped epoch at its start (an epoch-boundary resume).
"""
from __future__ import annotations

import argparse
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset

from regzoo.data.datasets import collate_eval
from regzoo.data.locate import HF_DICT_FILE, SplitLocation, is_shard_pattern, locate_split
from regzoo.data.sources import TrainSplit, open_eval_split, open_train_split
from regzoo.data.transforms import create_transform
from regzoo.training.config import RunConfig
from regzoo.training.errors import TrainingInputError, UnreadableImageError
from regzoo.training.loaders import image_folder, seed_all, train_transform


_KEY_AND_EXT = re.compile(r'^((?:.*/|)[^.]+)[.]([^/]*)$')  # webdataset's base_plus_ext: a sample's key, extension


@dataclass(frozen=True)
class Splits:
    """Both splits of a run, before any transform: ``train`` is an ImageFolder, an HF dataset (``load(index)``)
    or a ``ShardTrainDataset``; ``val`` an ImageFolder (both splits folders: checked before epoch 0 as before)
    or the val split's location (read through ``open_eval_split``, as validate.py reads it)."""
    train: object
    val: object
    num_train: int
    classes: tuple[str, ...] | None    # None: the data's labels are classifier indices
    num_classes: int
    train_where: str
    val_where: str

    @property
    def streams(self) -> bool:
        return isinstance(self.train, IterableDataset)


def _present(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir() if p.is_dir())


def _located(data_dir: str, split: str) -> SplitLocation:
    try:
        return locate_split(data_dir, split)
    except FileNotFoundError as e:
        path = Path(data_dir)
        if path.is_dir() and not (path / HF_DICT_FILE).is_file():
            raise TrainingInputError(
                f'split {path / split} not found; {path} holds {_present(path) or "no folders"} (choose with '
                '--train-split / --val-split: a folder, <split>-*.tar shards or an HF DatasetDict split)') from None
        raise TrainingInputError(f'--data-dir: {e}') from None
    except (ValueError, ImportError) as e:
        raise TrainingInputError(f'--data-dir: {e}') from None


def count_shard_samples(shards: list[str]) -> int:
    """Samples in ``shards`` from the tar headers alone (webdataset's grouping: consecutive files sharing the
    name up to the first dot of the base name); used when ``classes.json`` gives no ``num_images``."""
    count = 0
    for shard in shards:
        last = None
        with tarfile.open(shard) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _KEY_AND_EXT.match(member.name)
                key = match.group(1) if match else member.name
                if key != last:
                    count, last = count + 1, key
    return count


def load_splits(args: argparse.Namespace, rank: int = 0, world: int = 1) -> Splits:
    """Locate and open both splits (no transforms yet: they follow the model's eval cfg), with the class names
    and their number; raises TrainingInputError with a one-line message for data it cannot use."""
    if not args.data_dir:
        raise TrainingInputError('--data-dir is required')
    text = str(args.data_dir)
    if not is_shard_pattern(text) and not Path(text).exists():
        raise TrainingInputError(f'--data-dir {text} does not exist (give a folder of splits, WebDataset shards '
                                 'or an HF save_to_disk folder)')
    where = _located(text, args.train_split)
    val_where = _located(text, args.val_split)
    if where.kind == 'folder':
        train = image_folder(where.path.parent, where.path.name)
        classes, num_train = tuple(train.classes), len(train)
    else:
        try:
            ts: TrainSplit = open_train_split(text, args.train_split, seed=args.seed, rank=rank, world=world,
                                              reseed=seed_all)
        except (ValueError, ImportError, OSError) as e:
            raise TrainingInputError(f'--train-split {args.train_split}: {e}') from None
        train, classes = ts.dataset, tuple(ts.classes) if ts.classes is not None else None
        num_train = ts.num_images if ts.num_images is not None else count_shard_samples(list(where.shards))
        if where.kind == 'shards' and ts.num_images is None and rank == 0:
            print(f'train.py: counted {num_train} samples in {where.describe()} (no num_images in classes.json)',
                  file=sys.stderr, flush=True)
    num_classes = len(classes) if classes is not None else args.num_classes
    if num_classes is None:
        raise TrainingInputError(f'{where.describe()} has no class names (classes.json beside the shards, or a '
                                 'ClassLabel label column): pass --num-classes N')
    if classes is not None and args.num_classes is not None and args.num_classes != num_classes:
        raise TrainingInputError(f'--num-classes {args.num_classes} conflicts with the data: {where.describe()} '
                                 f'has {num_classes} class{" folders" if where.kind == "folder" else "es"}')
    if val_where.kind == 'folder' and where.kind == 'folder':
        val = image_folder(val_where.path.parent, val_where.path.name)
        if val.class_to_idx != train.class_to_idx:
            only_val = sorted(set(val.classes) - set(train.classes))
            raise TrainingInputError(
                f'the {args.val_split} classes differ from the {args.train_split} classes'
                + (f' (only in {args.val_split}: {only_val[:5]})' if only_val else ''))
    else:
        val = val_where
    return Splits(train, val, num_train, classes, num_classes, where.describe(), val_where.describe())


class CheckedStream(IterableDataset):
    """A shard training stream whose unreadable images raise UnreadableImageError (one line naming it)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        try:
            yield from self.dataset
        except OSError as e:
            raise UnreadableImageError(str(e)) from None


class ShardEpochs:
    """The streaming stand-in for ``GlobalBatchSampler``: the updates of an epoch, and the epoch for the stream."""

    restarts_epochs = True  # a resume restarts the stopped epoch at its start (no position inside a stream)

    def __init__(self, dataset, num_images: int, batch_size: int, world_size: int, accum_steps: int):
        self.dataset = dataset
        global_batch = batch_size * world_size * accum_steps
        if global_batch > num_images:
            raise TrainingInputError(
                f'the global batch {global_batch} (= batch {batch_size} x {world_size} processes x {accum_steps} '
                f'accumulation steps) is larger than the {num_images} training images')
        self.updates_per_epoch = num_images // global_batch
        self.micro_steps_per_epoch = self.updates_per_epoch * accum_steps

    def set_epoch(self, epoch: int, start_micro_step: int = 0) -> None:
        if start_micro_step:
            raise ValueError('a shard stream starts its epochs at their start (restore rewinds the position)')
        self.dataset.set_epoch(epoch)


def stream_loader(splits: Splits, cfg: RunConfig, info) -> tuple[DataLoader, ShardEpochs]:
    """The shard stream's DataLoader (no sampler, whole batches) and its epochs."""
    splits.train.transform = train_transform(cfg)
    epochs = ShardEpochs(splits.train, splits.num_train, cfg.batch_size, info.world_size, cfg.grad_accum_steps)
    loader = DataLoader(CheckedStream(splits.train), batch_size=cfg.batch_size, num_workers=cfg.workers,
                        pin_memory=torch.cuda.is_available(), drop_last=True,
                        persistent_workers=False)  # workers see each epoch's set_epoch
    return loader, epochs


class ReadableBatches:
    """``(images, targets)`` of a ``collate_eval`` loader; unreadable images are reported once and not counted."""

    def __init__(self, loader: DataLoader, rank: int):
        self.loader, self.rank, self.reported = loader, rank, False

    def __iter__(self):
        skipped = []
        for images, targets, _, bad in self.loader:
            skipped.extend(bad)
            if images is not None:
                yield images, targets
        if skipped and not self.reported:
            self.reported = True
            for item in skipped[:5]:
                print(f'train.py: skipped unreadable image {item.path} ({item.reason}) (val split, rank {self.rank}:'
                      ' not counted in the accuracy)', file=sys.stderr, flush=True)


def eval_split_loader(splits: Splits, cfg: RunConfig, info) -> ReadableBatches:
    """The val split as validate.py reads it (``open_eval_split``: each image on exactly one rank), its labels
    mapped to the run's classes by name."""
    class_map = {name: i for i, name in enumerate(splits.classes)} if splits.classes is not None else None
    try:
        dataset = open_eval_split(
            str(cfg.data_dir), create_transform(cfg.data_config), num_classes=splits.num_classes,
            split=cfg.val_split, class_map=class_map, rank=info.rank, world=info.world_size)
    except (ValueError, KeyError, ImportError, OSError) as e:
        raise TrainingInputError(f'--val-split {cfg.val_split}: {e}') from None
    loader = DataLoader(dataset, batch_size=cfg.validation_batch_size or cfg.batch_size, num_workers=cfg.workers,
                        shuffle=False, collate_fn=collate_eval, persistent_workers=False)
    return ReadableBatches(loader, info.rank)
