"""torchvision layout: ``stem.0``/``stem.1``, ``trunk_output.block{S}.block{S}-{J}.f.a.0``, ``fc``.

Blocks are numbered from 0 within a stage (``block1-0``); ours from 1 (``s1.b1``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from regzoo.zoo.convert._rename import BN, in_blocks, rename_keys

NAME = 'torchvision'
_TV_BLOCK = re.compile(r'trunk_output\.block(\d+)\.block\d+-(\d+)\.(.*)')

# in-block names: torchvision's Conv2dNormActivation is a Sequential (0 = conv, 1 = bn)
_BLOCK_RULES = (
    (r'proj\.0\.weight', r'downsample.conv.weight'),
    (rf'proj\.1\.{BN}', r'downsample.bn.\1'),
    (r'f\.a\.0\.weight', r'conv1.conv.weight'),
    (rf'f\.a\.1\.{BN}', r'conv1.bn.\1'),
    (r'f\.b\.0\.weight', r'conv2.conv.weight'),
    (rf'f\.b\.1\.{BN}', r'conv2.bn.\1'),
    (r'f\.se\.fc([12])\.(weight|bias)', r'se.fc\1.\2'),
    (r'f\.c\.0\.weight', r'conv3.conv.weight'),
    (rf'f\.c\.1\.{BN}', r'conv3.bn.\1'),
)
_RULES = (
    (r'stem\.0\.weight', r'stem.conv.weight'),
    (rf'stem\.1\.{BN}', r'stem.bn.\1'),
    (r'fc\.(weight|bias)', r'head.fc.\1'),
) + in_blocks(_BLOCK_RULES)


def looks_like(keys: set[str]) -> bool:
    return 'stem.0.weight' in keys and any(k.startswith('trunk_output.') for k in keys)


def _renumber_block(key: str) -> str:
    """'trunk_output.block2.block2-0.f.a.0.weight' -> 's2.b1.f.a.0.weight' (in-block names are renamed later)."""
    m = _TV_BLOCK.fullmatch(key)
    return f's{m[1]}.b{int(m[2]) + 1}.{m[3]}' if m else key


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return rename_keys({_renumber_block(k): v for k, v in state_dict.items()}, _RULES, NAME)
