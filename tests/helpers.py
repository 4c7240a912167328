"""Helpers the test modules import (``from helpers import ...``): synthetic image folders, BN randomising,
tensor comparison, arch parametrisation. conftest.py only configures pytest; nothing is imported from it.

Images come from the library's one generator (``regzoo.data.synthetic``), the same the demo and the
benchmark use; BN randomising is the library's (``regzoo.models.layers.randomize_bn``), the same the
benchmark gives every variant.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from regzoo.data.synthetic import write_image_folder
from regzoo.models.layers import randomize_bn

__all__ = ['HUGE_ARCHS', 'arch_params', 'class_folders', 'learnable_splits', 'max_rel_diff', 'randomize_bn']

# SEER sizes: 0.6-1.3 B parameters; building them costs many GB and seconds, so their heavy checks are opt-in
HUGE_ARCHS = ('regnety_1280', 'regnety_2560')


def arch_params(names):
    """pytest params over arch names, with the SEER giants marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in HUGE_ARCHS else n for n in names]


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |a|: one number for "equal up to float error" at any logit scale."""
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


def learnable_splits(root: Path, classes: int | Sequence[str] = 10, train: int = 16, val: int = 5,
                     size: int | tuple[int, int] = 32, seed: int = 0, exts: Sequence[str] = ('.png',)) -> Path:
    """``root/train/<class>/`` and ``root/val/<class>/`` of synthetic images a short training run learns."""
    return write_image_folder(root, classes, {'train': train, 'val': val}, size, seed, exts)


def class_folders(root: Path, classes: Sequence[str], n: int = 2, ext: str = '.JPEG', size: int = 8) -> Path:
    """Tiny class folders, for tests of folder layout and label order where the pixels do not matter."""
    return write_image_folder(root, classes, n, size, seed=0, exts=(ext,))
