"""One build pipeline for every registered model: check kwargs, resolve cfgs, build, load, wrap.

Weights load into the plain model *before* any features wrapper, so ``features_only=True`` works
with ``pretrained=True`` and ``checkpoint_path=`` alike (timm #488, #2150).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
from collections.abc import Mapping

import torch
import torch.nn as nn

from regzoo.models.design import RegNetCfg, make_stages
from regzoo.models.features import (
    FeatureDictNet,
    FeatureGetterNet,
    FeatureGraphNet,
    FeatureListNet,
    resolve_out_indices,
)
from regzoo.models.layers import init_classifier
from regzoo.models.regnet import RegNet
from regzoo.utils.names import did_you_mean
from regzoo.zoo.applying import adapt_input_cfg, apply_checkpoint
from regzoo.zoo.cfgs import MODEL_CFGS
from regzoo.zoo.fetch import fetch_pretrained
from regzoo.zoo.hub_names import is_hub_name, resolve_hub_name
from regzoo.zoo.loading import read_checkpoint
from regzoo.zoo.pretrained import PretrainedCfg, default_pretrained_cfg, weight_cfg
from regzoo.zoo.registry import REGISTRY

_LOGGER = logging.getLogger(__name__)
_MODEL_KWARGS = tuple(p for p in inspect.signature(RegNet).parameters if p != 'cfg')
_BUILD_KWARGS = ('pretrained_tag', 'pretrained_cfg', 'pretrained_cfg_overlay', 'checkpoint_path', 'cache_dir',
                 'allow_nonfinite', 'features_only', 'out_indices', 'feature_cls', 'feature_cfg', 'device', 'dtype')
_CFG_FIELDS = tuple(f.name for f in dataclasses.fields(RegNetCfg))

# feature_cls names (timm's) -> wrapper. 'hook' reads the same taps as 'list': a RegNet's taps are its direct
# children, so hooks would return exactly FeatureListNet's maps (and FeatureListNet scripts; timm's hook net does not)
FEATURE_CLASSES = {'list': FeatureListNet, 'hook': FeatureListNet, 'dict': FeatureDictNet,
                   'getter': FeatureGetterNet, 'fx': FeatureGraphNet}
# feature_cfg keys that change nothing for a RegNet, with the values accepted: its taps are not inside
# nn.Sequential containers (flatten_sequential), no tap outputs a tuple (feature_concat), the model is never
# rewritten (no_rewrite), it has no final norm (norm), and every tap is NCHW (output_fmt)
_FEATURE_NO_OPS = {'flatten_sequential': (True, False), 'feature_concat': (True, False),
                   'no_rewrite': (None, True, False), 'norm': (True, False), 'output_fmt': ('NCHW',),
                   'return_dict': (False,)}
# feature_cfg keys a wrapper takes as arguments
_FEATURE_ARGS = {FeatureDictNet: ('out_map',), FeatureGetterNet: ('prune',)}


def _check_kwargs(arch: str, kwargs: dict) -> None:
    known = _MODEL_KWARGS + _BUILD_KWARGS + _CFG_FIELDS
    for key in kwargs:
        if key not in known:
            raise TypeError(
                f'{arch}: unexpected keyword argument {key!r}{did_you_mean(key, known)}'
                + f'. Accepted: {", ".join(known)}')


def as_pretrained_cfg(value, arch: str) -> PretrainedCfg:
    """``create_model(pretrained_cfg=)`` as a PretrainedCfg: one as is, a dict in timm's or regzoo's keys,
    or a timm ``PretrainedCfg`` (a tag string is handled by the caller)."""
    if isinstance(value, PretrainedCfg):
        return value
    if isinstance(value, Mapping):
        return PretrainedCfg.from_dict(value, arch)
    if dataclasses.is_dataclass(value) and hasattr(value, 'to_dict'):  # timm's PretrainedCfg
        return PretrainedCfg.from_dict(value.to_dict(), arch)
    raise TypeError(f'{arch}: pretrained_cfg={value!r} is invalid: expected a tag string, a dict or a PretrainedCfg')


def _resolve_pretrained_cfg(
        arch: str, tag: str | None, cfg_arg, overlay: Mapping | None, pretrained: bool, checkpoint,
) -> PretrainedCfg:
    """The model's pretrained cfg, as timm resolves it: ``pretrained_cfg=`` (a cfg, or a tag that wins over the
    name's), else the name's tag, else a checkpoint's saved cfg, else the arch's default weight's (also when no
    weights are loaded, as timm), else a generic cfg naming the arch; then ``pretrained_cfg_overlay``."""
    if isinstance(cfg_arg, str):
        tag, cfg_arg = cfg_arg or tag, None
    if cfg_arg is not None:
        cfg = as_pretrained_cfg(cfg_arg, arch)
    elif tag:
        cfg = weight_cfg(f'{arch}.{tag}')  # an unknown tag raises, listing the valid ones
    elif checkpoint is not None and not pretrained and (saved := checkpoint.pretrained_cfg(arch)) is not None:
        cfg = saved
    else:
        cfg = default_pretrained_cfg(arch)
        if cfg is None:
            if pretrained and not (overlay or {}).get('file'):
                weight_cfg(arch)  # raises: no weights for this arch, with close matches
            cfg = PretrainedCfg(arch, '', label_set=None)  # a user arch without weights: timm's default cfg
    return cfg.replace(**overlay) if overlay else cfg


def _feature_wrapper(arch: str, num_taps: int, out_indices, feature_cls, feature_cfg: Mapping):
    """Check the features_only arguments before any weights are read; returns ``wrap(model) -> wrapper``."""
    taps = resolve_out_indices(out_indices, num_taps)  # taps that cannot exist fail here (stem + one per stage)
    cfg = dict(feature_cfg)
    if isinstance(feature_cls, str):
        if feature_cls.lower() not in FEATURE_CLASSES:
            raise ValueError(f'{arch}: feature_cls={feature_cls!r} is invalid; accepted: '
                             f'{", ".join(FEATURE_CLASSES)} (or a wrapper class)')
        if feature_cls.lower() == 'hook' and cfg.get('return_dict'):
            feature_cls, cfg['return_dict'] = 'dict', False  # timm's hook net with return_dict gives a dict
        feature_cls = FEATURE_CLASSES[feature_cls.lower()]
    elif feature_cls is None:
        feature_cls = FeatureListNet
    elif not isinstance(feature_cls, type):
        raise TypeError(f'{arch}: feature_cls={feature_cls!r} is invalid: a name or a wrapper class')
    if feature_cls not in FEATURE_CLASSES.values():  # a wrapper class of the caller's: it takes the whole cfg
        return lambda model: feature_cls(model, out_indices=taps, **cfg)
    for key, accepted in _FEATURE_NO_OPS.items():
        if key in cfg and cfg.pop(key) not in accepted:
            raise ValueError(f'{arch}: feature_cfg {key}={feature_cfg[key]!r} cannot be honoured: regzoo accepts '
                             f'{" or ".join(map(repr, accepted))} (for a RegNet it changes nothing)'
                             + ("; for dict outputs use feature_cls='dict'" if key == 'return_dict' else ''))
    takes = _FEATURE_ARGS.get(feature_cls, ())
    unknown = sorted(set(cfg) - set(takes))
    if unknown:
        raise TypeError(f'{arch}: feature_cfg key(s) {unknown} do not apply to {feature_cls.__name__}; it takes '
                        f'{", ".join(("out_indices", "feature_cls") + takes + tuple(_FEATURE_NO_OPS))}')
    return lambda model: feature_cls(model, out_indices, **cfg)


def _device_dtype(arch: str, device, dtype) -> tuple[torch.device | None, torch.dtype | None]:
    """``create_model``'s ``device=`` / ``dtype=`` checked: a torch device (or its name, or a CUDA index) and a
    floating dtype (or its name: 'bfloat16', 'torch.float16'); None stays None."""
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"{arch}: device={device!r} is invalid: a torch device such as 'cpu', 'cuda:0' or "
                             f"'meta' ({e})") from None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix('torch.'), dtype)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"{arch}: dtype={dtype!r} is invalid: a floating dtype such as torch.bfloat16 or "
                         "'float16'")
    return device, dtype


def _initialise(model: RegNet, device: torch.device) -> None:
    """Give a model built on the meta device its memory on ``device`` and the values building it there gives:
    each layer's own init in construction order (which draws the same random numbers), then RegNet's."""
    model.to_empty(device=device)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()
        model._init_weights()  # what RegNet.__init__ runs after building its layers
        if isinstance(model.head.fc, nn.Linear):
            init_classifier(model.head.fc)


def build_regnet(arch: str, cfg: RegNetCfg, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build ``arch`` from ``cfg``.

    RegNetCfg fields in ``kwargs`` override the cfg; ``pretrained_tag`` / ``pretrained_cfg`` (a tag, a dict or
    a PretrainedCfg) / ``pretrained_cfg_overlay`` pick the weight; ``cache_dir`` is the download cache;
    ``checkpoint_path`` loads a local file or directory (any supported format); ``features_only`` wraps the
    loaded model as a feature extractor (``out_indices``, ``feature_cls``, ``feature_cfg`` as timm); the rest
    go to ``RegNet``. Unknown keys raise a TypeError naming them.

    ``device`` / ``dtype`` build the model there and in that precision directly: it is built on the meta device
    (no memory), then either takes the loaded weights in place (``apply_checkpoint``: one copy, read shard by
    shard from a sharded checkpoint) or gets its memory and initial values there. ``device='meta'`` leaves it
    without data (shapes only; weights cannot be loaded then). Loading weights builds on meta in any case.

    A checkpoint's head size, first-conv channels and saved ``model_args`` are the defaults for
    ``num_classes``, ``in_chans`` and the rest, then the pretrained cfg's (as timm). ``model.pretrained_cfg``
    (also ``model.default_cfg``) is always set, as timm: the weight's, the checkpoint's, or the arch's
    default weight's cfg when no weights are loaded. Like timm's, it describes the weights (``num_classes``
    stays theirs); unlike timm's, it is fitted to the model's ``in_chans``, so its data config feeds the model.
    """
    _check_kwargs(arch, kwargs)
    checkpoint = None
    if checkpoint_path := kwargs.pop('checkpoint_path', None):
        # the file's bytes are verified in the background while the model is built (apply_checkpoint waits)
        checkpoint = read_checkpoint(checkpoint_path, defer_verification=True)
        # a saved model keeps its head, its input channels and its settings (timm config.json model_args)
        # unless the call overrides them
        saved = {**checkpoint.model_args, 'num_classes': checkpoint.num_classes(), 'in_chans': checkpoint.in_chans()}
        for key, value in saved.items():
            if kwargs.get(key) is None and value is not None:
                kwargs[key] = value
        _check_kwargs(f'{arch} (model_args of {checkpoint_path})', kwargs)
    cfg = cfg.replace(**{k: kwargs.pop(k) for k in _CFG_FIELDS if k in kwargs})
    tag = kwargs.pop('pretrained_tag', None)
    cfg_arg = kwargs.pop('pretrained_cfg', None)
    overlay = kwargs.pop('pretrained_cfg_overlay', None)
    cache_dir = kwargs.pop('cache_dir', None)
    allow_nonfinite = bool(kwargs.pop('allow_nonfinite', False))  # NaN/Inf weights: a warning, not an error
    device, dtype = _device_dtype(arch, kwargs.pop('device', None), kwargs.pop('dtype', None))
    loads = pretrained or checkpoint is not None
    if loads and device is not None and device.type == 'meta':
        raise ValueError(f"{arch}: device='meta' builds without data, so no weights can be loaded into it: pass "
                         'pretrained=False and no checkpoint_path, or a real device')
    features_only = kwargs.pop('features_only', False)
    feature_cfg = dict(kwargs.pop('feature_cfg', None) or {})
    # as timm: the out_indices / feature_cls kwargs win over feature_cfg's
    out_indices, cfg_out_indices = kwargs.pop('out_indices', None), feature_cfg.pop('out_indices', None)
    out_indices = cfg_out_indices if out_indices is None else out_indices
    feature_cls, cfg_feature_cls = kwargs.pop('feature_cls', None), feature_cfg.pop('feature_cls', None)
    feature_cls = cfg_feature_cls if feature_cls is None else feature_cls
    if not features_only and (out_indices is not None or feature_cls is not None or feature_cfg):
        given = [k for k, v in (('out_indices', out_indices), ('feature_cls', feature_cls),
                                ('feature_cfg', feature_cfg or None)) if v is not None]
        raise TypeError(f'{arch}: {" and ".join(given)} {"is" if len(given) == 1 else "are"} only valid with '
                        'features_only=True')
    wrap = _feature_wrapper(arch, len(make_stages(cfg)) + 1, out_indices, feature_cls, feature_cfg) \
        if features_only else None
    model_kwargs = {k: v for k, v in kwargs.items() if v is not None}

    pretrained_cfg = _resolve_pretrained_cfg(arch, tag, cfg_arg, overlay, pretrained, checkpoint)
    callers_names = (cfg_arg is not None and not isinstance(cfg_arg, str)) or \
        set(overlay or {}) & {'label_set', 'label_names', 'class_names'}
    if not pretrained and checkpoint is None and not callers_names:
        # random init: the weight's eval transform still applies, its class names do not (issue 23: a saved or
        # predicted random model claimed ImageNet labels); a cfg or names the caller gives are theirs to claim
        pretrained_cfg = pretrained_cfg.replace(label_set=None)
    # as timm's _update_default_model_kwargs: the cfg's head size and input channels are the defaults
    if pretrained_cfg.num_classes is not None and pretrained_cfg.num_classes >= 0:
        model_kwargs.setdefault('num_classes', pretrained_cfg.num_classes)
    model_kwargs.setdefault('in_chans', pretrained_cfg.input_size[0])

    # on the meta device (no memory) when weights will take the parameters' place, or device/dtype ask for them
    on_meta = loads or device is not None or dtype is not None
    try:
        with torch.device('meta') if on_meta else contextlib.nullcontext():
            model = RegNet(cfg, **model_kwargs)
        if dtype is not None:
            model.to(dtype)
    except Exception:
        if checkpoint is not None:
            checkpoint.verify()  # sizes read from damaged bytes: report the damage, not what it broke
        raise
    fitted = adapt_input_cfg(pretrained_cfg, model.in_chans)
    model.pretrained_cfg = model.default_cfg = fitted  # one object under both names, as timm
    model.arch = arch  # the registered name, also when built through an alias
    target = torch.get_default_device() if device is None else device
    # find -> read + verify -> convert -> fit + apply (docs/design.md): the pretrained weight, then (as timm)
    # a checkpoint_path over it; each takes its place on ``target`` in ``dtype``
    found = [fetch_pretrained(pretrained_cfg, cache_dir)] if pretrained else []
    weights = [read_checkpoint(path, source_format, defer_verification=True) for path, source_format in found]
    for loaded in weights + ([checkpoint] if checkpoint is not None else []):
        apply_checkpoint(model, loaded, allow_nonfinite, device=target, dtype=dtype)
        _LOGGER.info('%s: loaded %s (%s layout)', arch, loaded.path, loaded.source_format)
    if on_meta and not loads and target.type != 'meta':
        _initialise(model, target)
    if wrap is not None:
        model = wrap(model)
        # as timm's pretrained_cfg_for_features: no num_classes, no classifier
        model.pretrained_cfg = model.default_cfg = fitted.for_features()
    return model


def create_model(
        model_name: str,
        pretrained: bool = False,
        pretrained_cfg: str | Mapping | PretrainedCfg | None = None,
        pretrained_cfg_overlay: Mapping | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        scriptable: bool | None = None,
        exportable: bool | None = None,
        no_jit: bool | None = None,
        **kwargs,
) -> nn.Module:
    """Build a registered model by name; timm's ``create_model`` signature and semantics.

    Args:
        model_name: ``arch`` or ``arch.tag``, e.g. ``regnety_032`` or ``regnety_032.pycls_in1k``;
            aliases such as ``regnet_y_3_2gf`` or ``RegNetY-3.2GF`` work too; so do Hugging Face hub names:
            HF transformers' repos (``facebook/regnet-y-040``, with or without ``hf-hub:``) and
            ``hf-hub:ORG/REPO`` in timm's or transformers' layout (``regzoo.zoo.hub_names``).
        pretrained: load the tag's weights (the arch's default tag when none is given).
        pretrained_cfg: the weight cfg: a tag (``'ra_in1k'``; it wins over the name's tag, as timm), a dict in
            timm's keys, or a ``PretrainedCfg``. ``model.pretrained_cfg`` is always set, as timm: without
            weights it is the default weight's cfg.
        pretrained_cfg_overlay: fields replacing the cfg's, e.g. ``dict(file='/data/w.safetensors')``.
        checkpoint_path: a local weights file or saved directory to load (any supported layout). Weights holding
            NaN/Inf raise ``CheckpointError``; ``allow_nonfinite=True`` loads them with a warning.
        cache_dir: the download cache for this call (HF hub cache / URL download folder), as timm.
        scriptable, exportable, no_jit: accepted and ignored: every regzoo model scripts, exports and uses no
            jit-scripted layers, so there is no layer variant to choose (see ``regzoo.utils.layer_config``).
        **kwargs: ``num_classes`` (default: the checkpoint's or the weight's; 0 removes the classifier),
            ``in_chans`` (pretrained first convs are adapted), ``features_only``, ``out_indices``,
            ``feature_cls`` ('list', 'dict', 'hook', 'getter', 'fx' or a class), ``feature_cfg``,
            ``output_stride``, ``global_pool``, ``drop_rate``, ``drop_path_rate``, ``zero_init_last``, or any
            ``RegNetCfg`` field to override the architecture. None values are dropped (as timm); anything
            else raises a TypeError.
            ``device`` / ``dtype`` (as timm and transformers take them): build the model on that device and in
            that floating precision directly, with no full-size copy elsewhere first; ``device='meta'`` builds
            shapes only, without memory (``regnety_10b``, 9.35 B parameters, in about a second).
    """
    del scriptable, exportable, no_jit  # accepted no-ops, documented above
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    hub = resolve_hub_name(model_name, pretrained, cache_dir) if is_hub_name(model_name) else None
    if hub is not None:  # 'facebook/regnet-y-040', 'hf-hub:ORG/REPO': the repo's arch, weights and settings
        kwargs = {**hub.model_args, **kwargs}
        pretrained_cfg = hub.pretrained_cfg if pretrained_cfg is None else pretrained_cfg
    if hub is not None and hub.cfg is not None:  # no registered arch has the repo's stages: its config's own
        fn, tag = functools.partial(build_regnet, hub.arch, hub.cfg), None
    else:
        arch, tag = REGISTRY.split(hub.arch if hub is not None else model_name)
        fn = REGISTRY.entrypoint(arch)
    for key, value in (('pretrained_cfg', pretrained_cfg), ('pretrained_cfg_overlay', pretrained_cfg_overlay),
                       ('checkpoint_path', checkpoint_path), ('cache_dir', cache_dir)):
        if value is not None:
            kwargs[key] = value
    return fn(pretrained=pretrained, pretrained_tag=tag, **kwargs)


def arch_cfg(name: str) -> RegNetCfg:
    """The ``RegNetCfg`` a registered name (``arch``, ``arch.tag``, an alias, a user arch) builds."""
    arch = REGISTRY.resolve(REGISTRY.split(name)[0])
    if arch in MODEL_CFGS:
        return MODEL_CFGS[arch]
    with torch.device('meta'):  # only the factory knows a user arch's cfg; on meta building allocates nothing
        return REGISTRY.entrypoint(arch)().cfg
