"""WebDataset shards as torch datasets, read by webdataset's own tar pipeline (``tarfile_samples``).

A sample is webdataset's dict: ``__key__``, ``__url__``, the image bytes under one of ``IMAGE_KEYS`` and the class
under ``cls`` (an integer as text). ``ShardEvalDataset`` yields every sample exactly once over DDP ranks and
DataLoader workers (``regzoo.data.sharding``'s evaluation rule); ``ShardTrainDataset`` yields an epoch in the
order fixed by (seed, epoch): seeded shard order split over ranks and workers, then a seeded shuffle buffer.
"""
from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from regzoo.data.datasets import SkippedImage, eval_sample, load_rgb
from regzoo.data.sharding import (
    Reader,
    current_reader,
    epoch_shard_order,
    eval_reads_whole_shards,
    reader_shards,
    shuffle_seed,
)
from regzoo.data.locate import require_webdataset

IMAGE_KEYS = ('jpg', 'jpeg', 'png', 'webp')  # the webdataset convention's image extensions, in lookup order


def shard_samples(shards: Iterable[str]) -> Iterator[dict]:
    """The samples of ``shards``, in order, as webdataset reads them (one dict per key)."""
    require_webdataset()
    from webdataset.tariterators import tarfile_samples

    return tarfile_samples({'url': url} for url in shards)


def sample_name(sample: dict) -> str:
    return f'{sample["__url__"]}:{sample["__key__"]}'


def sample_image_bytes(sample: dict) -> bytes | None:
    return next((sample[k] for k in IMAGE_KEYS if k in sample), None)


def sample_label(sample: dict) -> int:
    if 'cls' not in sample:
        raise ValueError(f'shard sample {sample_name(sample)} has no "cls" entry (the class index); '
                         'write shards with one, e.g. python -m regzoo.data.shards')
    return int(sample['cls'])


class ShardEvalDataset(torch.utils.data.IterableDataset):
    """``(image, target, position)`` or ``SkippedImage`` per sample of ``shards``, this reader's share only.

    ``targets[cls]`` is the classifier index of label ``cls`` (None: ``cls`` is that index). Readers take whole
    shards when there are at least as many shards as readers (ranks x workers), else every reader walks all
    shards and keeps the positions ``reader.index::reader.count`` (also with ``num_samples``: the first N).
    """

    def __init__(self, shards: Sequence[str], targets: list[int] | None, num_classes: int, transform=None, *,
                 rank: int = 0, world: int = 1, num_samples: int | None = None):
        self.shards, self.targets, self.num_classes = list(shards), targets, num_classes
        self.transform, self.rank, self.world, self.num_samples = transform, rank, world, num_samples

    def _target(self, sample: dict) -> int:
        label = sample_label(sample)
        limit = len(self.targets) if self.targets is not None else self.num_classes
        if not 0 <= label < limit:
            where = 'the classes of classes.json' if self.targets is not None else "the model's classes"
            raise ValueError(f'shard sample {sample_name(sample)} has cls {label}, outside the {limit} of {where}')
        return self.targets[label] if self.targets is not None else label

    def _item(self, sample: dict, position: int):
        data, target = sample_image_bytes(sample), self._target(sample)
        if data is None:  # skipped and counted, as an unreadable file is
            return SkippedImage(sample_name(sample), f'no image entry ({"|".join(IMAGE_KEYS)})')
        return eval_sample(io.BytesIO(data), sample_name(sample), target, position, self.transform)

    def reader_samples(self, reader: Reader) -> Iterator[tuple[int, dict]]:
        """(position, sample) pairs that ``reader`` evaluates; over all readers, each sample exactly once."""
        if eval_reads_whole_shards(len(self.shards), reader, self.num_samples):
            mine = [self.shards[i] for i in reader_shards(range(len(self.shards)), reader)]
            yield from enumerate(shard_samples(mine))
            return
        for position, sample in enumerate(shard_samples(self.shards)):
            if self.num_samples is not None and position >= self.num_samples:
                return
            if position % reader.count == reader.index:
                yield position, sample

    def __iter__(self):
        for position, sample in self.reader_samples(current_reader(self.rank, self.world)):
            yield self._item(sample, position)


def sample_seed(seed: int, epoch: int, sample: dict) -> int:
    """A sample's augmentation seed: a function of (seed, epoch, shard file name, key), not of who reads it."""
    name = f'{str(sample["__url__"]).rsplit("/", 1)[-1]}:{sample["__key__"]}'
    return int(np.random.SeedSequence([seed, epoch, zlib.crc32(name.encode())]).generate_state(1)[0])


class ShardTrainDataset(torch.utils.data.IterableDataset):
    """One epoch of ``(transform(image), cls)`` from this process's shards (``set_epoch`` before each epoch).

    The order is a function of (seed, epoch, rank, world, worker, workers) alone: the epoch's shard permutation,
    this reader's share of it, a shuffle buffer of ``shuffle_buffer`` samples seeded by (seed, epoch, rank,
    worker). ``reseed(sample_seed)``, when given, runs before each transform (seed the augmentation RNGs). An
    unreadable image raises OSError naming it. Use ``persistent_workers=False`` so that workers see the epoch.
    """

    def __init__(self, shards: Sequence[str], transform=None, *, seed: int = 0, rank: int = 0, world: int = 1,
                 shuffle_buffer: int = 2000, reseed: Callable[[int], object] | None = None,
                 classes: list[str] | None = None, num_samples: int | None = None):
        self.shards, self.transform, self.seed = list(shards), transform, seed
        self.rank, self.world, self.shuffle_buffer, self.reseed = rank, world, shuffle_buffer, reseed
        self.classes, self.num_samples = classes, num_samples  # from classes.json, when it has them
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def reader_samples(self, reader: Reader) -> Iterator[dict]:
        """The raw samples ``reader`` reads in the current epoch, in order."""
        order = epoch_shard_order(len(self.shards), self.seed, self.epoch)
        stream = shard_samples([self.shards[i] for i in reader_shards(order, reader)])
        if self.shuffle_buffer <= 1:
            return stream
        from webdataset.filters import shuffle

        size = self.shuffle_buffer
        return shuffle(size, initial=size, seed=shuffle_seed(self.seed, self.epoch, reader))(stream)

    def __iter__(self):
        for sample in self.reader_samples(current_reader(self.rank, self.world)):
            data = sample_image_bytes(sample)
            try:
                if data is None:
                    raise OSError(f'no image entry ({"|".join(IMAGE_KEYS)})')
                img = load_rgb(io.BytesIO(data))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                raise OSError(f'unreadable image {sample_name(sample)} ({type(err).__name__}: {err}); '
                              'remove or replace it in the shards') from None
            if self.reseed is not None:
                self.reseed(sample_seed(self.seed, self.epoch, sample))
            yield (self.transform(img) if self.transform else img), sample_label(sample)
