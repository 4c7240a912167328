"""Datasets, transforms and a resumable, shard-aware sampler.

Exact resume and DDP == one process rest on two choices here:
- the epoch's order is a permutation seeded by (seed, epoch), cut into *global* batches; each global
  batch is cut into contiguous per-process micro-batches. So rank r of W at step j sees the same images
  whatever W and --grad-accum-steps are, as long as the global batch is the same, and a resumed run
  can start mid-epoch by skipping micro-batches;
- every image's augmentation draws from RNGs seeded by (seed, epoch, image index), not from a stream
  that depends on worker scheduling or on where a run was interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from regzoo.data.transforms import DataConfig, create_transform, resolve_data_config
from regzoo.training.args import TRAIN_DATA_DEFAULTS
from regzoo.training.config import RunConfig
from regzoo.training.errors import TrainingInputError, UnreadableImageError
from regzoo.training.sizes import parse_size, size_steps

if TYPE_CHECKING:  # torchvision loads when a split is read, not when train.py --help runs
    from torchvision.datasets import ImageFolder

# AlexNet/pycls PCA of ImageNet RGB pixels (pycls/datasets/transforms.py, there in BGR order)
_EIG_VALS = torch.tensor([0.2175, 0.0188, 0.0045])
_EIG_VECS = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def mix_seed(*values: int) -> int:
    """A well-mixed 32-bit seed from a tuple of ints (seed, rank, epoch, step / index)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed the three global RNGs that torchvision/timm transforms, mixup and drop-path read.

    Only torch's CPU generator: torch.manual_seed also seeds every GPU and costs ~0.6 ms per call,
    which adds up at one call per image; nothing here draws random numbers on the GPU.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)


class PcaLighting:
    """AlexNet-style lighting noise on a normalized CHW tensor (pycls TRAIN.PCA_STD); timm has none."""

    def __init__(self, std: float):
        self.std = std

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        return img + (_EIG_VECS @ (alpha * _EIG_VALS)).view(3, 1, 1).to(img.dtype)

    def __repr__(self) -> str:
        return f'PcaLighting(std={self.std})'


def run_data_config(args: argparse.Namespace, start_cfg, in_chans: int) -> tuple[tuple[int, int], DataConfig]:
    """(train crop size, eval data config) of a run: flags > the starting weight's cfg > train.py's defaults.

    ``start_cfg``: the eval settings of the weight the run starts from (a PretrainedCfg or a dict with its
    fields), or None. A weight trains at its train size (``input_size``) and evaluates at its test size and
    crop (``test_input_size`` / ``test_crop_pct``), as timm's validate.py would evaluate it; ``--img-size``
    sets both sizes.
    """
    given = {'img_size': args.img_size, 'crop_pct': args.crop_pct, 'interpolation': args.interpolation,
             'mean': args.mean, 'std': args.std, 'in_chans': in_chans}
    base = start_cfg if start_cfg is not None else {**TRAIN_DATA_DEFAULTS,
                                                    'input_size': (in_chans, *TRAIN_DATA_DEFAULTS['input_size'][1:])}
    try:
        train = resolve_data_config(given, pretrained_cfg=base, use_test_size=False)
        evaluation = resolve_data_config(given, pretrained_cfg=base, use_test_size=True)
    except (TypeError, ValueError) as e:
        raise TrainingInputError(f'--img-size/--crop-pct/--interpolation/--mean/--std: {e}') from None
    return train.input_size[1:], evaluation


def sized_data_config(args, train_size: tuple[int, int], evaluation: DataConfig
                      ) -> tuple[tuple[int, int], DataConfig]:
    """(the last train size, the eval config) once ``--train-sizes`` / ``--test-img-size`` apply to the size
    ``run_data_config`` resolved (what their fractions refer to)."""
    steps = size_steps(args.train_sizes)
    if not steps and args.test_img_size is None:
        return train_size, evaluation
    if train_size[0] != train_size[1]:
        raise TrainingInputError(f'--train-sizes/--test-img-size need a square train size, got '
                                 f'{train_size[0]}x{train_size[1]}')
    if steps:  # the run's train size is the schedule's last (config.json's input_size)
        train_size = (steps[-1].size(train_size[0]),) * 2
    if args.test_img_size is not None:
        test = parse_size(args.test_img_size).size(train_size[0])
        evaluation = dataclasses.replace(evaluation, input_size=(evaluation.input_size[0], test, test))
    return train_size, evaluation


def train_transform(cfg: RunConfig, size: int | None = None):
    """timm's train transform at ``size`` (an epoch's size of ``--train-sizes``; default: the run's train size),
    with the run's eval interpolation and normalization."""
    from timm.data import create_transform as timm_create_transform
    from torchvision.transforms import Normalize

    data = cfg.data_config
    tf = timm_create_transform(
        (size, size) if size is not None else tuple(cfg.train_size), is_training=True, scale=tuple(cfg.scale), hflip=cfg.hflip,
        color_jitter=cfg.color_jitter or None, auto_augment=cfg.aa, interpolation=data['interpolation'],
        mean=tuple(data['mean']), std=tuple(data['std']), re_prob=cfg.reprob)
    if cfg.pca_lighting:
        at = next(i for i, t in enumerate(tf.transforms) if isinstance(t, Normalize)) + 1
        tf.transforms.insert(at, PcaLighting(cfg.pca_lighting))
    return tf


def image_folder(data_dir: Path, split: str) -> ImageFolder:
    root = data_dir / split
    if not root.is_dir():
        present = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
        raise TrainingInputError(
            f'split folder {root} not found; {data_dir} holds {present or "no folders"} '
            f'(choose with --train-split / --val-split)')
    try:
        from torchvision.datasets import ImageFolder

        folder = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as e:  # raised for an empty tree or no class folders
        raise TrainingInputError(f'{root}: {e}') from None
    folder.loader = CheckedLoader(folder.loader)
    return folder


class CheckedLoader:
    """An image loader whose unreadable files raise UnreadableImageError (one line: the file, the cause, the fix)."""

    def __init__(self, loader):
        self.loader = loader

    def __call__(self, path: str):
        try:
            return self.loader(path)
        except OSError as e:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise UnreadableImageError(f'unreadable image {path} ({type(e).__name__}: {e}); '
                                       'remove or replace it') from None


def load_image(base, index: int):
    """(RGB image, target) ``index`` of an ImageFolder or of an HF training split (``load(index)``); an unreadable
    image raises UnreadableImageError."""
    if hasattr(base, 'load'):
        try:
            return base.load(index)
        except OSError as e:  # HFImageDataset names the row and the fix
            raise UnreadableImageError(str(e)) from None
    path, target = base.samples[index]
    return base.loader(path), target


class SeededTransformDataset(Dataset):
    """Indexed by (index, seed): seeds the RNGs, then loads and transforms image ``index`` (``load_image``)."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        img, target = load_image(self.base, index)
        seed_all(seed)
        return self.transform(img), target


class GlobalBatchSampler(Sampler[tuple[int, int]]):
    """(index, augmentation seed) pairs for one process: see the module docstring."""

    restarts_epochs = False  # a resume continues mid-epoch, exactly

    def __init__(self, num_images: int, batch_size: int, world_size: int, rank: int, accum_steps: int,
                 seed: int, shuffle: bool = True):
        self.num_images, self.batch_size, self.world_size, self.rank = num_images, batch_size, world_size, rank
        self.accum_steps, self.seed, self.shuffle = accum_steps, seed, shuffle
        self.global_batch = batch_size * world_size * accum_steps
        if self.global_batch > num_images:
            raise TrainingInputError(
                f'the global batch {self.global_batch} (= batch {batch_size} x {world_size} processes x '
                f'{accum_steps} accumulation steps) is larger than the {num_images} training images')
        self.updates_per_epoch = num_images // self.global_batch  # the ragged tail is dropped, as drop_last
        self.micro_steps_per_epoch = self.updates_per_epoch * accum_steps
        self.epoch, self.start_micro_step = 0, 0

    def set_epoch(self, epoch: int, start_micro_step: int = 0) -> None:
        self.epoch, self.start_micro_step = epoch, start_micro_step

    def __len__(self) -> int:
        return (self.micro_steps_per_epoch - self.start_micro_step) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_images, generator=g).tolist()
        else:
            order = list(range(self.num_images))
        a, w, b = self.accum_steps, self.world_size, self.batch_size
        for m in range(self.start_micro_step, self.micro_steps_per_epoch):
            chunk = (m // a) * a * w + self.rank * a + m % a
            for index in order[chunk * b:(chunk + 1) * b]:
                yield index, mix_seed(self.seed, self.epoch, index)


def train_sampler(train: ImageFolder, args: argparse.Namespace, rank: int) -> GlobalBatchSampler:
    """This process's sampler; raises for a global batch larger than the data (before any weights are read)."""
    return GlobalBatchSampler(len(train), args.batch_size, args.world_size, rank, args.grad_accum_steps, args.seed)


def train_loader(train: ImageFolder, cfg: RunConfig, sampler: GlobalBatchSampler) -> DataLoader:
    loader = DataLoader(
        SeededTransformDataset(train, train_transform(cfg)), batch_size=cfg.batch_size, sampler=sampler,
        num_workers=cfg.workers, pin_memory=torch.cuda.is_available(), drop_last=True,
        persistent_workers=False)  # workers re-read the sampler's epoch / start step every epoch
    return loader


class _ReadCheck(Dataset):
    """Image ``indices[i]`` of ``folder`` decoded and dropped: (its index, why it is unreadable, or '')."""

    def __init__(self, folder: ImageFolder, indices: list[int]):
        self.folder, self.indices = folder, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, str]:
        index = self.indices[i]
        try:
            self.folder.loader(self.folder.samples[index][0])
        except UnreadableImageError as e:
            return index, str(e)
        return index, ''


def unreadable_images(folder: ImageFolder, indices: list[int], workers: int) -> dict[int, str]:
    """{index: reason} of the images among ``indices`` that cannot be decoded, each read once (in ``workers``
    processes): the val split is checked before the first epoch, not found bad after it."""
    loader = DataLoader(_ReadCheck(folder, indices), batch_size=32, num_workers=workers, collate_fn=list)
    return {index: reason for batch in loader for index, reason in batch if reason}


def val_indices(val: ImageFolder, world_size: int, rank: int) -> list[int]:
    """This process's share of the val split: every image exactly once over all processes (no padding), so
    the summed metrics are exact."""
    return list(range(rank, len(val), world_size))


def val_loader(val: ImageFolder, cfg: RunConfig, indices: list[int]) -> DataLoader:
    """The val images ``indices`` (``val_indices`` less any unreadable ones) at the run's eval transform."""
    val.transform = create_transform(cfg.data_config)
    return DataLoader(torch.utils.data.Subset(val, indices), batch_size=cfg.validation_batch_size or cfg.batch_size,
                      num_workers=cfg.workers, shuffle=False)
