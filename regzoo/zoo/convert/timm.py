"""timm layout: identical to ours (``stem.conv``, ``s1.b1.conv1.conv``, ``head.fc``), so conversion is identity.

EMA copies (``state_dict_ema``) are picked by the container unwrapping in ``regzoo.convert``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

NAME = 'timm'
_BLOCK_KEY = re.compile(r's\d+\.b\d+\.(conv1\.conv|conv1|norm1)\.weight')  # plain and pre-activation blocks


def looks_like(keys: set[str]) -> bool:
    return any(_BLOCK_KEY.fullmatch(k) for k in keys)


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state_dict)
