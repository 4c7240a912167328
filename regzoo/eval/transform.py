"""A model's eval transform: PIL image -> normalised tensor, from the model's data config (or one given)."""
from __future__ import annotations

import functools

import torch.nn as nn
from PIL import Image

from regzoo.data.transforms import DataConfig, create_transform, resolve_data_config


def _grey(transform, img: Image.Image):
    return transform(img.convert('L'))


def eval_transform(model: nn.Module, data_config: DataConfig | None = None):
    """``model``'s eval transform: ``data_config`` (default: ``resolve_data_config(model=model)``, its weight's
    test size, crop and interpolation) applied to images decoded as RGB; a 1-channel model reads them as greyscale,
    as timm's validate.py does (``input_img_mode='L'``)."""
    in_chans = getattr(model, 'in_chans', None)
    if data_config is None:
        data_config = resolve_data_config(model=model)
        if in_chans is not None and data_config.input_size[0] != in_chans:
            data_config = resolve_data_config({'in_chans': in_chans, 'img_size': data_config.input_size[1:]},
                                              model=model)
    in_chans = data_config.input_size[0] if in_chans is None else in_chans
    if data_config.input_size[0] != in_chans:
        raise ValueError(f'the input size has {data_config.input_size[0]} channels but the model takes {in_chans}')
    if in_chans == 1:
        return functools.partial(_grey, create_transform(data_config))
    if in_chans != 3:
        raise ValueError(f'the model takes {in_chans}-channel input; regzoo reads images as RGB or greyscale')
    return create_transform(data_config)
