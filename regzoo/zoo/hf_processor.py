"""A weight's eval transform as HF transformers' ``preprocessor_config.json``, both directions.

transformers preprocesses RegNet images with its ``ConvNextImageProcessor``: for ``size={'shortest_edge': N}``
below 384 it resizes the shortest edge to ``int(N / crop_pct)`` and center-crops ``N x N``; from 384 up it warps
the image to ``N x N`` (no crop, ``crop_pct`` ignored); then rescales by ``rescale_factor`` and normalizes.

* ``processor_config(cfg)``: the processor config closest to ``cfg``'s eval transform (what
  ``regzoo.resolve_data_config`` resolves: the test size and crop when the cfg has them); ``inexact(cfg)`` says
  where it is not the same transform (docs/checkpoint-formats.md, ``benchmarks/hf_pipeline_agreement.py``).
* ``cfg_fields_from_processor(config)``: the ``PretrainedCfg`` fields a processor config says (input size, crop,
  interpolation, mean, std), for a folder's or a hub repo's file (``with_processor``).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from regzoo.data.transforms import resolve_data_config

_LOGGER = logging.getLogger(__name__)
PROCESSOR_NAME = 'preprocessor_config.json'
PROCESSOR_TYPE = 'ConvNextImageProcessor'  # what transformers' RegNet repos name (AutoImageProcessor's for regnet)
WARP_SIZE = 384  # ConvNextImageProcessor warps to N x N without a crop from this shortest_edge up
RESCALE_FACTOR = 1 / 255
# PIL.Image.Resampling's (and transformers' PILImageResampling's) numbers for timm's interpolation names
RESAMPLE = {'nearest': 0, 'lanczos': 1, 'bilinear': 2, 'bicubic': 3, 'box': 4, 'hamming': 5}
_INTERPOLATION = {v: k for k, v in RESAMPLE.items()}
# the processors with ConvNext's resize semantics (transformers 4's names, 5's, and the legacy feature extractor)
_CONVNEXT_TYPES = ('ConvNextImageProcessor', 'ConvNextImageProcessorFast', 'ConvNextImageProcessorPil',
                   'ConvNextFeatureExtractor')


def processor_config(cfg) -> dict:
    """The ``ConvNextImageProcessor`` config expressing ``cfg``'s eval transform (as closely as it can: ``inexact``).

    ``cfg``: a ``PretrainedCfg``, a ``DataConfig`` or a dict of their fields.
    """
    data = resolve_data_config(pretrained_cfg=cfg)
    size = data.input_size[1]  # a square processor: the height of a non-square input (inexact says so)
    return dict(image_processor_type=PROCESSOR_TYPE, do_resize=True, size={'shortest_edge': size},
                crop_pct=data.crop_pct if size < WARP_SIZE else 1.0, resample=RESAMPLE[data.interpolation],
                do_rescale=True, rescale_factor=RESCALE_FACTOR, do_normalize=True, image_mean=list(data.mean),
                image_std=list(data.std))


def inexact(cfg) -> list[str]:
    """Where ``processor_config(cfg)`` is not ``cfg``'s eval transform; empty when only the resize kernels differ
    (transformers resizes tensors, timm PIL images: a few grey levels at most, see the benchmark)."""
    data = resolve_data_config(pretrained_cfg=cfg)
    (h, w), why = data.input_size[1:], []
    if h != w:
        why.append(f'a non-square input {h}x{w} (the processor crops squares: {h}x{h})')
    if data.crop_mode != 'center' and not (h >= WARP_SIZE and data.crop_mode == 'squash' and data.crop_pct == 1):
        why.append(f"crop_mode={data.crop_mode!r} (the processor resizes the shortest edge and center-crops)")
    elif h >= WARP_SIZE and data.crop_mode == 'center':
        why.append(f'size {h} >= {WARP_SIZE} with a center crop (the processor warps the whole image to {h}x{h}'
                   + (f', ignoring crop_pct {data.crop_pct})' if data.crop_pct != 1 else ')'))
    if data.interpolation not in ('nearest', 'bilinear', 'bicubic'):
        why.append(f"interpolation={data.interpolation!r} (transformers' torchvision backend resizes tensors with "
                   'nearest, bilinear or bicubic only)')
    return why


def cfg_fields_from_processor(config: Mapping, in_chans: int = 3) -> dict:
    """The ``PretrainedCfg`` fields a ``preprocessor_config.json`` says; {} for a processor of another kind.

    The processor's size and crop replace the train and test ones both (``test_input_size``/``test_crop_pct``
    None), so regzoo's eval transform is the file's. A ``shortest_edge`` >= 384 is a warp: ``crop_mode='squash'``
    at ``crop_pct`` 1.0, which is that. ``do_normalize`` false means mean 0, std 1.
    """
    kind = str(config.get('image_processor_type') or config.get('feature_extractor_type') or '')
    if kind not in _CONVNEXT_TYPES:
        _LOGGER.warning('%s: %r is not a ConvNext image processor; its settings are not read (regzoo keeps its '
                        'default eval transform)', PROCESSOR_NAME, kind or None)
        return {}
    if config.get('do_rescale', True) and abs(float(config.get('rescale_factor', RESCALE_FACTOR)) - RESCALE_FACTOR) > 1e-9:
        _LOGGER.warning('%s: rescale_factor %s is not 1/255; regzoo scales pixels to [0, 1] regardless',
                        PROCESSOR_NAME, config.get('rescale_factor'))
    fields = {}
    size = config.get('size', 384)
    edge = size.get('shortest_edge') if isinstance(size, Mapping) else size
    if config.get('do_resize', True) and isinstance(edge, int) and edge > 0:
        warp = edge >= WARP_SIZE
        fields.update(input_size=(in_chans, edge, edge), test_input_size=None, test_crop_pct=None,
                      crop_pct=1.0 if warp else float(config.get('crop_pct') or 224 / 256),
                      crop_mode='squash' if warp else 'center')
    if (resample := config.get('resample', RESAMPLE['bicubic'])) in _INTERPOLATION:
        fields['interpolation'] = _INTERPOLATION[resample]
    if config.get('do_normalize', True):
        for key, field in (('image_mean', 'mean'), ('image_std', 'std')):
            if key in config:
                values = config[key]
                values = [values] if isinstance(values, (int, float)) else list(values)
                fields[field] = tuple(float(v) for v in (values * in_chans if len(values) == 1 else values))
    else:
        fields.update(mean=(0.0,) * in_chans, std=(1.0,) * in_chans)
    return fields


def read_processor(folder: str | os.PathLike) -> dict | None:
    """``folder``'s ``preprocessor_config.json`` as a dict; None when there is none or it is no JSON object."""
    path = Path(folder) / PROCESSOR_NAME
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:
        _LOGGER.warning('%s: unreadable (%s); regzoo keeps its default eval transform', path, e)
        return None
    return config if isinstance(config, dict) else None


def with_processor(cfg, processor: Mapping | None, where: str | os.PathLike = PROCESSOR_NAME):
    """``cfg`` (a ``PretrainedCfg``) with the eval transform ``processor`` (a preprocessor_config dict) says.

    Values that make no eval transform raise a one-line ``ValueError`` naming ``where`` (the file)."""
    if not processor:
        return cfg
    try:
        out = cfg.replace(**cfg_fields_from_processor(processor, cfg.input_size[0]))
        resolve_data_config(pretrained_cfg=out)  # checks every field
    except (TypeError, ValueError) as e:
        raise ValueError(f'{where}: {e}; fix the file or delete it (regzoo then uses its default eval '
                         'transform)') from None
    return out
