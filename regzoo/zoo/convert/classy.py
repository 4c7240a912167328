"""classy_vision / vissl layout (SEER): ``classy_state_dict.base_model.model.{trunk,heads}``.

vissl wraps the ClassyVision RegNet as ``_feature_blocks`` = {``conv1``: stem, ``res2``..``res5``: the
stages ``trunk_output.block1..4``} (vissl/models/trunks/regnet.py). ClassyVision names inside
(classy_vision/models/anynet.py): stem ``stem.0``/``stem.1`` (a Sequential named ``stem`` inside the
stem module), blocks ``block{S}-{J}`` (J from 0), shortcut ``proj`` + ``bn``, transform ``f.a.0/1``,
``f.b.0/1``, ``f.se.excitation.0/2``, ``f.c`` + ``f.final_bn``. Heads: ``0.clf.0`` is the linear
classifier of the fine-tuned / linear-eval checkpoints.

The container is flattened to ``trunk.<key>`` / ``heads.<key>`` by ``regzoo.convert`` before this runs.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import torch

from regzoo.zoo.convert._rename import BN, in_blocks, rename_keys

NAME = 'classy'
_LOGGER = logging.getLogger(__name__)
_TRUNK = 'trunk._feature_blocks.'
_CLASSY_BLOCK = re.compile(r'res\d+\.block(\d+)-(\d+)\.(.*)')
# self-supervised pre-training heads (SwAV projection MLP, prototypes) have no classifier equivalent
_SSL_HEAD = re.compile(r'heads\.\d+\.(projection_head|prototypes\d*)\..*')

_BLOCK_RULES = (
    (r'proj\.weight', r'downsample.conv.weight'),
    (rf'bn\.{BN}', r'downsample.bn.\1'),
    (r'f\.a\.0\.weight', r'conv1.conv.weight'),
    (rf'f\.a\.1\.{BN}', r'conv1.bn.\1'),
    (r'f\.b\.0\.weight', r'conv2.conv.weight'),
    (rf'f\.b\.1\.{BN}', r'conv2.bn.\1'),
    (r'f\.se\.excitation\.0\.(weight|bias)', r'se.fc1.\1'),
    (r'f\.se\.excitation\.2\.(weight|bias)', r'se.fc2.\1'),
    (r'f\.c\.weight', r'conv3.conv.weight'),
    (rf'f\.final_bn\.{BN}', r'conv3.bn.\1'),
)
_RULES = (
    (r'conv1\.stem\.0\.weight', r'stem.conv.weight'),
    (rf'conv1\.stem\.1\.{BN}', r'stem.bn.\1'),
    (r'heads\.0\.clf\.0\.(weight|bias)', r'head.fc.\1'),
) + in_blocks(_BLOCK_RULES)


def looks_like(keys: set[str]) -> bool:
    return any(k.startswith(_TRUNK) for k in keys)


def _strip_trunk(key: str) -> str:
    """'trunk._feature_blocks.res2.block1-0.f.a.0.weight' -> 's1.b1.f.a.0.weight'; heads keys are kept."""
    if not key.startswith(_TRUNK):
        return key
    key = key[len(_TRUNK):]
    m = _CLASSY_BLOCK.fullmatch(key)
    return f's{m[1]}.b{int(m[2]) + 1}.{m[3]}' if m else key


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ssl_heads = {k for k in state_dict if _SSL_HEAD.fullmatch(k)}
    if ssl_heads:
        _LOGGER.info('classy checkpoint: dropping %d self-supervised head tensor(s) (%s, ...): no classifier '
                     'equivalent; load with num_classes=0 or a new classifier', len(ssl_heads), min(ssl_heads))
    kept = {_strip_trunk(k): v for k, v in state_dict.items() if k not in ssl_heads}
    return rename_keys(kept, _RULES, NAME)
