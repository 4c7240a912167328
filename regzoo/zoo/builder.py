"""One build pipeline for every registered model: check kwargs, resolve cfgs, build, load, wrap.

Weights load into the plain model *before* any features wrapper, so ``features_only=True`` works
with ``pretrained=True`` and ``checkpoint_path=`` alike (timm #488, #2150).
"""
from __future__ import annotations

import dataclasses
import inspect

import torch
import torch.nn as nn

from regzoo.models.design import RegNetCfg, make_stages
from regzoo.models.features import FeatureListNet, resolve_out_indices
from regzoo.models.regnet import RegNet
from regzoo.utils.names import did_you_mean
from regzoo.zoo.cfgs import MODEL_CFGS
from regzoo.zoo.loading import adapt_input_cfg, apply_checkpoint, load_pretrained, read_checkpoint
from regzoo.zoo.pretrained import get_pretrained_cfg
from regzoo.zoo.registry import REGISTRY

_MODEL_KWARGS = tuple(p for p in inspect.signature(RegNet).parameters if p != 'cfg')
_BUILD_KWARGS = ('pretrained_tag', 'pretrained_cfg_overlay', 'checkpoint_path', 'features_only', 'out_indices')
_CFG_FIELDS = tuple(f.name for f in dataclasses.fields(RegNetCfg))


def _check_kwargs(arch: str, kwargs: dict) -> None:
    known = _MODEL_KWARGS + _BUILD_KWARGS + _CFG_FIELDS
    for key in kwargs:
        if key not in known:
            raise TypeError(
                f'{arch}: unexpected keyword argument {key!r}{did_you_mean(key, known)}'
                + f'. Accepted: {", ".join(known)}')


def build_regnet(arch: str, cfg: RegNetCfg, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build ``arch`` from ``cfg``.

    RegNetCfg fields in ``kwargs`` override the cfg; ``pretrained_tag``/``pretrained_cfg_overlay``
    pick the weight; ``checkpoint_path`` loads a local file or directory (any supported format);
    ``features_only``/``out_indices`` wrap the loaded model as a feature extractor; the rest go to
    ``RegNet``. Unknown keys raise a TypeError naming them.

    A checkpoint's head size, first-conv channels and saved ``model_args`` are the defaults for
    ``num_classes``, ``in_chans`` and the rest. ``model.pretrained_cfg`` (the weight's or the checkpoint's
    eval settings) is fitted to the model's ``in_chans``, so its data config feeds the model as built.
    """
    _check_kwargs(arch, kwargs)
    checkpoint = None
    if checkpoint_path := kwargs.pop('checkpoint_path', None):
        checkpoint = read_checkpoint(checkpoint_path)
        # a saved model keeps its head, its input channels and its settings (timm config.json model_args)
        # unless the call overrides them
        saved = {**checkpoint.model_args, 'num_classes': checkpoint.num_classes(), 'in_chans': checkpoint.in_chans()}
        for key, value in saved.items():
            if kwargs.get(key) is None and value is not None:
                kwargs[key] = value
        _check_kwargs(f'{arch} (model_args of {checkpoint_path})', kwargs)
    cfg = cfg.replace(**{k: kwargs.pop(k) for k in _CFG_FIELDS if k in kwargs})
    tag = kwargs.pop('pretrained_tag', None)
    overlay = kwargs.pop('pretrained_cfg_overlay', None)
    features_only = kwargs.pop('features_only', False)
    out_indices = kwargs.pop('out_indices', None)
    if out_indices is not None and not features_only:
        raise TypeError(f'{arch}: out_indices is only valid with features_only=True')
    if features_only:
        # fail before reading or downloading weights for taps that cannot exist (stem + one per stage)
        resolve_out_indices(out_indices, len(make_stages(cfg)) + 1)
    model_kwargs = {k: v for k, v in kwargs.items() if v is not None}

    pretrained_cfg = None
    if pretrained or tag or overlay:
        pretrained_cfg = get_pretrained_cfg(f'{arch}.{tag}' if tag else arch)
        if overlay:
            pretrained_cfg = pretrained_cfg.replace(**overlay)
        model_kwargs.setdefault('num_classes', pretrained_cfg.num_classes)

    model = RegNet(cfg, **model_kwargs)
    pretrained_cfg = pretrained_cfg or (checkpoint and checkpoint.pretrained_cfg(arch))
    model.pretrained_cfg = pretrained_cfg and adapt_input_cfg(pretrained_cfg, model.in_chans)
    model.arch = arch  # the registered name, also when built through an alias
    if pretrained:
        load_pretrained(model, pretrained_cfg)
    if checkpoint is not None:
        apply_checkpoint(model, checkpoint)
    if features_only:
        model = FeatureListNet(model, out_indices)
    return model


def create_model(
        model_name: str, pretrained: bool = False, num_classes: int | None = None, in_chans: int | None = None,
        **kwargs,
) -> nn.Module:
    """Build a registered model by name.

    Args:
        model_name: ``arch`` or ``arch.tag``, e.g. ``regnety_032`` or ``regnety_032.pycls_in1k``;
            aliases such as ``regnet_y_3_2gf`` or ``RegNetY-3.2GF`` work too.
        pretrained: load the tag's weights (the arch's default tag when none is given).
        num_classes: classifier outputs (default: the checkpoint's or the weight's, else 1000); 0 removes
            the classifier.
        in_chans: input channels (default: the checkpoint's, else 3); pretrained first convs are adapted.
        **kwargs: ``checkpoint_path``, ``pretrained_cfg_overlay``, ``features_only``, ``out_indices``,
            ``output_stride``, ``global_pool``, ``drop_rate``, ``drop_path_rate``, ``zero_init_last``,
            or any ``RegNetCfg`` field to override the architecture. Anything else raises.
    """
    arch, tag = REGISTRY.split(model_name)
    fn = REGISTRY.entrypoint(arch)
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    if in_chans is not None:
        kwargs['in_chans'] = in_chans
    return fn(pretrained=pretrained, pretrained_tag=tag, **kwargs)


def arch_cfg(name: str) -> RegNetCfg:
    """The ``RegNetCfg`` a registered name (``arch``, ``arch.tag``, an alias, a user arch) builds."""
    arch = REGISTRY.split(name)[0]
    if arch in MODEL_CFGS:
        return MODEL_CFGS[arch]
    with torch.device('meta'):  # only the factory knows a user arch's cfg; on meta building allocates nothing
        return REGISTRY.entrypoint(arch)().cfg
