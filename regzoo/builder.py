"""One build pipeline for every registered model: check kwargs, resolve cfgs, build, load, wrap."""
from __future__ import annotations

import dataclasses
import inspect

import torch.nn as nn

from .design import RegNetCfg
from .registry import close_matches
from .regnet import RegNet

_MODEL_KWARGS = tuple(p for p in inspect.signature(RegNet).parameters if p != 'cfg')
_BUILD_KWARGS = ('pretrained_tag', 'pretrained_cfg_overlay', 'checkpoint_path', 'features_only', 'out_indices')
_CFG_FIELDS = tuple(f.name for f in dataclasses.fields(RegNetCfg))


def _check_kwargs(arch: str, kwargs: dict) -> None:
    known = _MODEL_KWARGS + _BUILD_KWARGS + _CFG_FIELDS
    for key in kwargs:
        if key not in known:
            hint = close_matches(key, known, n=3)
            raise TypeError(
                f'{arch}: unexpected keyword argument {key!r}'
                + (f'; did you mean {", ".join(map(repr, hint))}?' if hint else '')
                + f'. Accepted: {", ".join(known)}')


def build_regnet(arch: str, cfg: RegNetCfg, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build ``arch`` from ``cfg``: RegNetCfg fields in kwargs override the cfg, the rest go to the model."""
    _check_kwargs(arch, kwargs)
    cfg = cfg.replace(**{k: kwargs.pop(k) for k in _CFG_FIELDS if k in kwargs})
    build = {k: kwargs.pop(k) for k in _BUILD_KWARGS if k in kwargs}
    model_kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = RegNet(cfg, **model_kwargs)
    model.pretrained_cfg = None
    model.arch = arch
    model.pretrained_tag = build.get('pretrained_tag')
    return model
