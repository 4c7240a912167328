"""pycls layout (``.pyth`` files, weights under ``model_state``): ``stem.conv``, ``s1.b1.f.a``, ``s1.b1.f.a_bn``,
``s1.b1.proj``/``s1.b1.bn`` (shortcut), ``s1.b1.f.se.f_ex.0``, ``head.fc``.

pycls trained on BGR input (its loader reads images with cv2 and never converts), so the released
weights expect BGR. We flip the input channels of the first conv here so the converted model takes
RGB like every other weight (pycls issue #73, timm's regnet.py note). timm's hosted ``pycls_in1k``
weights are already flipped and use the timm layout, so they never pass through this converter.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from regzoo.zoo.convert._rename import BN, in_blocks, rename_keys

NAME = 'pycls'
FIRST_CONV = 'stem.conv.weight'
_BLOCK_KEY = re.compile(r's\d+\.b\d+\.f\.a\.weight')

_BLOCK_RULES = (
    (r'proj\.weight', r'downsample.conv.weight'),
    (rf'bn\.{BN}', r'downsample.bn.\1'),
    (r'f\.a\.weight', r'conv1.conv.weight'),
    (rf'f\.a_bn\.{BN}', r'conv1.bn.\1'),
    (r'f\.b\.weight', r'conv2.conv.weight'),
    (rf'f\.b_bn\.{BN}', r'conv2.bn.\1'),
    (r'f\.se\.f_ex\.0\.(weight|bias)', r'se.fc1.\1'),
    (r'f\.se\.f_ex\.2\.(weight|bias)', r'se.fc2.\1'),
    (r'f\.c\.weight', r'conv3.conv.weight'),
    (rf'f\.c_bn\.{BN}', r'conv3.bn.\1'),
)
_RULES = (
    (r'stem\.conv\.weight', r'stem.conv.weight'),
    (rf'stem\.bn\.{BN}', r'stem.bn.\1'),
    (r'head\.fc\.(weight|bias)', r'head.fc.\1'),
) + in_blocks(_BLOCK_RULES)


def looks_like(keys: set[str]) -> bool:
    return 'stem.conv.weight' in keys and any(_BLOCK_KEY.fullmatch(k) for k in keys)


def bgr_to_rgb_first_conv(weight: torch.Tensor) -> torch.Tensor:
    """Reverse the input-channel order of the stem conv, so a BGR-trained net reads RGB."""
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(
            f'pycls checkpoint: {FIRST_CONV} has shape {tuple(weight.shape)}; the BGR->RGB flip needs 3 input channels')
    return weight.flip(1)


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = rename_keys(state_dict, _RULES, NAME)
    out[FIRST_CONV] = bgr_to_rgb_first_conv(out[FIRST_CONV])
    return out
