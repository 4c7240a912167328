"""The one eval data config + transform pair used by validate.py, inference and the hub.

``resolve_data_config`` merges (in rising priority) timm's defaults, the weight's pretrained cfg
(its *test* size and crop by default: evaluating at the train size costs up to ~0.8 top-1, timm
PR #2769), explicit args and keyword overrides into a frozen ``DataConfig``: the merge is timm's own
``timm.data.resolve_data_config``; regzoo adds keyword overrides, a test-size default, a (height, width)
``img_size``, regzoo's PretrainedCfg and Namespaces as inputs and one-line errors where timm asserts.
``create_transform`` turns it into timm's own eval transform, so the tensors are timm's for the same cfg.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regzoo.utils.names import did_you_mean

# timm.data.IMAGENET_DEFAULT_MEAN/STD (tests/test_layers.py checks they agree); timm itself loads only
# when a config is resolved or a transform built, so importing this module stays cheap
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875
CROP_MODES = ('center', 'squash', 'border')
# 'random' is a train-time choice; an eval transform needs one fixed filter
INTERPOLATIONS = ('bicubic', 'bilinear', 'nearest', 'box', 'hamming', 'lanczos')
_OVERRIDE_KEYS = ('input_size', 'img_size', 'in_chans', 'crop_pct', 'crop_mode', 'interpolation', 'mean', 'std')


@dataclass(frozen=True)
class DataConfig:
    """Everything the eval transform depends on. Unpacks like timm's dict: ``timm.data.create_transform(**cfg)``."""
    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = 'bicubic'
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = DEFAULT_CROP_PCT
    crop_mode: str = 'center'

    def __post_init__(self):
        _check(self)

    @property
    def img_size(self) -> int:
        """The square side (timm's results-file ``img_size``); the height for non-square inputs."""
        return self.input_size[1]

    def keys(self):
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str):
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(cfg: DataConfig) -> None:
    if cfg.crop_mode not in CROP_MODES:
        raise ValueError(f'unknown crop_mode {cfg.crop_mode!r}; choose one of {", ".join(CROP_MODES)}')
    if cfg.interpolation not in INTERPOLATIONS:
        hint = did_you_mean(cfg.interpolation, INTERPOLATIONS, n=1)
        raise ValueError(f'unknown eval interpolation {cfg.interpolation!r}{hint}'
                         f' (one of {", ".join(INTERPOLATIONS)})')
    if not 0 < cfg.crop_pct <= 2:
        raise ValueError(f'crop_pct must be in (0, 2], got {cfg.crop_pct}')
    if len(cfg.input_size) != 3 or min(cfg.input_size) < 1:
        raise ValueError(f'input_size must be (channels, height, width) of positive ints, got {cfg.input_size}')
    for name in ('mean', 'std'):
        if len(getattr(cfg, name)) != cfg.input_size[0]:
            raise ValueError(f'{name} {getattr(cfg, name)} has {len(getattr(cfg, name))} values '
                             f'for {cfg.input_size[0]} input channels')
    if any(s <= 0 for s in cfg.std):
        raise ValueError(f'std must be positive, got {cfg.std}')


def _as_dict(obj: Any) -> dict[str, Any]:
    """A PretrainedCfg / timm PretrainedCfg / argparse.Namespace / dict as a plain dict (None -> {})."""
    if obj is None:
        return {}
    if isinstance(obj, argparse.Namespace):
        return vars(obj)
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, 'to_dict'):
        return obj.to_dict()
    raise TypeError(f'expected a dict, argparse.Namespace or PretrainedCfg, got {type(obj).__name__}')


def _per_channel(values, in_chans: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * in_chans
    if len(values) != in_chans:
        raise ValueError(f'{name} needs 1 or {in_chans} values, got {len(values)}: {values}')
    return values


def resolve_data_config(
        args: Mapping | argparse.Namespace | None = None,
        pretrained_cfg: Any = None,
        model: Any = None,
        *,
        use_test_size: bool = True,
        **overrides,
) -> DataConfig:
    """The eval data config for a weight.

    Priority: ``overrides`` > ``args`` (a dict or argparse Namespace; None values are ignored) >
    ``pretrained_cfg`` (else ``model.pretrained_cfg``) > timm's defaults. Keys: ``input_size``,
    ``img_size``, ``in_chans``, ``crop_pct``, ``crop_mode``, ``interpolation``, ``mean``, ``std``.
    With ``use_test_size`` (default) the cfg's ``test_input_size``/``test_crop_pct`` win over the
    train-time ``input_size``/``crop_pct`` -- what timm's validate.py does.
    """
    unknown = sorted(set(overrides) - set(_OVERRIDE_KEYS))
    if unknown:
        raise TypeError(f'resolve_data_config: unknown override(s) {unknown}; accepted: {", ".join(_OVERRIDE_KEYS)}')
    given = {k: v for k, v in _as_dict(args).items() if k in _OVERRIDE_KEYS and v not in (None, '', [])}
    given.update({k: v for k, v in overrides.items() if v is not None})
    if pretrained_cfg is None and model is not None:
        pretrained_cfg = getattr(model, 'pretrained_cfg', None)
    cfg = {k: v for k, v in _as_dict(pretrained_cfg).items() if v not in ('', (), [])}
    # what timm's resolve_data_config does not: a (height, width) img_size, and ValueErrors naming the bad
    # value where timm asserts
    in_chans = int(given.get('in_chans') or 3)
    if given.get('input_size') is not None:
        if len(given['input_size']) != 3:
            raise ValueError(f'input_size must be (channels, height, width), got {given["input_size"]}')
        given['input_size'] = tuple(int(v) for v in given['input_size'])
        in_chans = given['input_size'][0]
    elif given.get('img_size') is not None:
        size = given.pop('img_size')
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        given['input_size'] = (in_chans, int(height), int(width))
    from timm.data import resolve_data_config as timm_resolve_data_config

    # mean/std given as one value are repeated for the channels of the *resolved* size (timm repeats them for
    # the given in_chans, asserting on other lengths): they are merged here
    normalization = {k: given.pop(k) for k in ('mean', 'std') if k in given}
    resolved = timm_resolve_data_config({**given, 'in_chans': in_chans}, pretrained_cfg=cfg,
                                        use_test_size=use_test_size)
    input_size = tuple(int(v) for v in resolved['input_size'])
    return DataConfig(input_size=input_size, interpolation=resolved['interpolation'],
                      mean=_per_channel(normalization.get('mean') or resolved['mean'], input_size[0], 'mean'),
                      std=_per_channel(normalization.get('std') or resolved['std'], input_size[0], 'std'),
                      crop_pct=float(resolved['crop_pct']), crop_mode=resolved['crop_mode'])


def create_transform(config: DataConfig | Mapping | None = None, **kwargs):
    """timm's eval transform (PIL image -> normalized float tensor) for ``config``.

    ``config`` is a ``DataConfig`` (or a dict of its fields); extra ``kwargs`` go to
    ``timm.data.create_transform`` (e.g. ``is_training=True`` with augmentation args, or
    ``crop_border_pixels``), so train and eval share one entry point.
    """
    if config is None:
        config = DataConfig()
    elif not isinstance(config, DataConfig):
        config = DataConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(config).items()})
    import timm.data

    return timm.data.create_transform(**config.to_dict(), **kwargs)
