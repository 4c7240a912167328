"""HF transformers layout (``RegNetForImageClassification`` / ``RegNetModel``), both directions.

    regnet.embedder.embedder.{convolution,normalization}    <-> stem.{conv,bn}
    regnet.encoder.stages.{i}.layers.{j}.shortcut            <-> s{i+1}.b{j+1}.downsample
    ....layer.0 / layer.1                                    <-> conv1 / conv2
    ....layer.2.attention.{0,2} (Y only)                     <-> se.fc1 / se.fc2
    ....layer.3 (Y) or layer.2 (X)                           <-> conv3
    classifier.1                                             <-> head.fc

``RegNetModel`` state dicts lack the ``regnet.`` prefix and the classifier. X vs Y is read per
block from the keys (an SE sits at ``layer.2`` only in Y blocks), so no config.json is needed.
The config itself, both directions: ``hf_config`` (model -> config.json) and ``regnet_cfg`` (config.json ->
an explicit-stage ``RegNetCfg``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

import torch

from regzoo.models.design import RegNetCfg
from regzoo.zoo.convert._rename import BN, in_blocks, rename_keys

NAME = 'hf'
HF_ACTIVATIONS = ('relu', 'silu', 'gelu')  # names our act and HF's ACT2FN agree on exactly
# transformers' RegNetConfig defaults (facebook/regnet-y-040's): save_pretrained's config.json leaves them out
HF_CONFIG_DEFAULTS = MappingProxyType(dict(
    num_channels=3, embedding_size=32, hidden_sizes=(128, 192, 512, 1088), depths=(2, 6, 12, 2), groups_width=64,
    layer_type='y', hidden_act='relu', downsample_in_first_stage=True))
_HF_BLOCK = re.compile(r'encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)')
_CONV_BN = ((r'convolution\.weight', r'conv.weight'), (rf'normalization\.{BN}', r'bn.\1'))


def _block_rules(se: bool) -> tuple[tuple[str, str], ...]:
    """(HF in-block regex, our in-block replacement) for an X block (``se=False``) or a Y block."""
    layers = [('layer.0', 'conv1'), ('layer.1', 'conv2'), ('layer.3' if se else 'layer.2', 'conv3'),
              ('shortcut', 'downsample')]
    rules = [(rf'{re.escape(h)}\.{p}', f'{ours}.{r}') for h, ours in layers for p, r in _CONV_BN]
    if se:
        rules += [(r'layer\.2\.attention\.0\.(weight|bias)', r'se.fc1.\1'),
                  (r'layer\.2\.attention\.2\.(weight|bias)', r'se.fc2.\1')]
    return tuple(rules)


def looks_like(keys: set[str]) -> bool:
    return any(k.endswith('embedder.embedder.convolution.weight') for k in keys)


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stripped = {k.removeprefix('regnet.'): v for k, v in state_dict.items()}
    matches = [m for m in map(_HF_BLOCK.fullmatch, stripped) if m]
    se_blocks = {m.group(1, 2) for m in matches if m[3].startswith('layer.2.attention.')}
    renamed = {}
    for key, value in stripped.items():
        m = _HF_BLOCK.fullmatch(key)
        if m:
            key = f's{int(m[1]) + 1}.b{int(m[2]) + 1}.' + ('Y.' if m.group(1, 2) in se_blocks else 'X.') + m[3]
        renamed[key] = value
    rules = [(r'embedder\.embedder\.' + p, 'stem.' + r) for p, r in _CONV_BN]
    rules += [(r'classifier\.1\.(weight|bias)', r'head.fc.\1')]
    for tag, se in (('X', False), ('Y', True)):
        rules += in_blocks(_block_rules(se), marker=tag)
    return rename_keys(renamed, rules, NAME)


def from_regzoo(state_dict: Mapping[str, torch.Tensor], se: bool) -> dict[str, torch.Tensor]:
    """Our keys -> ``RegNetForImageClassification`` keys (the writer side of ``convert``)."""
    return {_hf_key(k, se): v for k, v in state_dict.items()}


_OUR_BLOCK = re.compile(r's(\d+)\.b(\d+)\.(conv1|conv2|conv3|downsample|se)\.(.*)')


def _hf_key(key: str, se: bool) -> str:
    if key.startswith('stem.'):
        return 'regnet.embedder.embedder.' + _hf_conv_bn(key, key.removeprefix('stem.'))
    if key.startswith('head.fc.'):
        return 'classifier.1.' + key.removeprefix('head.fc.')
    m = _OUR_BLOCK.fullmatch(key)
    if not m:
        raise ValueError(f'regzoo -> hf: key {key!r} has no HF RegNet equivalent')
    prefix = f'regnet.encoder.stages.{int(m[1]) - 1}.layers.{int(m[2]) - 1}.'
    module, rest = m[3], m[4]
    if module == 'se':
        fc, _, param = rest.partition('.')
        return prefix + f'layer.2.attention.{dict(fc1=0, fc2=2)[fc]}.{param}'
    hf_module = dict(conv1='layer.0', conv2='layer.1', conv3='layer.3' if se else 'layer.2', downsample='shortcut')
    return prefix + f'{hf_module[module]}.' + _hf_conv_bn(key, rest)


def _hf_conv_bn(key: str, rest: str) -> str:
    """'conv.weight' -> 'convolution.weight', 'bn.running_mean' -> 'normalization.running_mean'."""
    layer, _, param = rest.partition('.')
    if layer not in ('conv', 'bn'):
        raise ValueError(f'regzoo -> hf: key {key!r} has no HF RegNet equivalent')
    return ('convolution.' if layer == 'conv' else 'normalization.') + param


def unsupported_features(model) -> list[str]:
    """Why HF's ``RegNetConfig`` can't express ``model`` (a ``regzoo.RegNet``); empty when it can."""
    cfg, why = model.cfg, []
    if cfg.bottle_ratio != 1:
        why.append(f'bottle_ratio={cfg.bottle_ratio} (HF blocks have no bottleneck ratio: always 1)')
    if cfg.se_ratio not in (0, 0.25):
        why.append(f'se_ratio={cfg.se_ratio} (HF fixes the SE width at round(block input width / 4))')
    if cfg.se_ratio and cfg.act != 'relu':
        why.append(f"act={cfg.act!r} with SE (HF's SE always uses ReLU)")
    if cfg.act not in HF_ACTIVATIONS:
        why.append(f'act={cfg.act!r} (supported: {HF_ACTIVATIONS})')
    if cfg.downsample != 'conv1x1':
        why.append(f'downsample={cfg.downsample!r} (HF shortcuts are always a 1x1 conv + BN projection)')
    if cfg.linear_out:
        why.append('linear_out=True (HF always applies the activation after the residual add)')
    if cfg.preact:
        why.append('preact=True (HF has no pre-activation blocks)')
    if cfg.num_features:
        why.append(f'num_features={cfg.num_features} (HF has no final 1x1 conv before the head)')
    if any(s.stride != 2 or s.dilation != 1 for s in model.stage_specs):
        why.append('output_stride < 32 (HF stages always stride 2, no dilation)')
    if any(s.groups != max(1, s.width // cfg.group_size) for s in model.stage_specs):
        why.append('per-stage group counts differ from HF\'s max(1, width // groups_width)')
    if model.head.pool_type != 'avg':
        why.append(f'global_pool={model.head.pool_type!r} (HF always average-pools)')
    return why


def hf_config(model, label_names: list[str] | None = None) -> dict:
    """The ``config.json`` of a ``RegNetForImageClassification`` equal to ``model``; raises if HF can't express it."""
    why = unsupported_features(model)
    if why:
        raise ValueError('HF transformers RegNetConfig cannot express this model: ' + '; '.join(why)
                         + ". Use save_pretrained(..., format='timm') instead.")
    n = model.num_classes
    if label_names is not None and len(label_names) != n:
        raise ValueError(f'{len(label_names)} label names for a {n}-class classifier')
    id2label = {str(i): name for i, name in enumerate(label_names or [f'LABEL_{i}' for i in range(n)])}
    return dict(
        architectures=['RegNetForImageClassification'],
        model_type='regnet',
        num_channels=model.in_chans,
        embedding_size=model.cfg.stem_width,
        hidden_sizes=[s.width for s in model.stage_specs],
        depths=[s.depth for s in model.stage_specs],
        groups_width=model.cfg.group_size,
        layer_type='y' if model.cfg.se_ratio else 'x',
        hidden_act=model.cfg.act,
        downsample_in_first_stage=True,
        id2label=id2label,
        label2id={name: int(i) for i, name in id2label.items()},
    )


def regnet_cfg(config: Mapping) -> RegNetCfg:
    """The ``RegNetCfg`` (explicit stages) an HF ``RegNetConfig`` describes, from its config.json dict.

    Raises ValueError naming what regzoo cannot build: another layer type or activation, an SE with an
    activation other than ReLU (HF's SE always uses ReLU, regzoo's the net's), a first stage without stride 2,
    more than 4 stages (regzoo dilates the fifth, HF strides it), or widths whose groups do not divide them.
    """
    c = {**HF_CONFIG_DEFAULTS, **config}
    widths, depths, act, layer = c['hidden_sizes'], c['depths'], c['hidden_act'], c['layer_type']
    why = []
    if layer not in ('x', 'y'):
        why.append(f"layer_type={layer!r} (HF's are 'x' and 'y')")
    if act not in HF_ACTIVATIONS:
        why.append(f'hidden_act={act!r} (supported: {", ".join(HF_ACTIVATIONS)})')
    elif layer == 'y' and act != 'relu':
        why.append(f"hidden_act={act!r} with layer_type 'y' (HF's SE always uses ReLU, regzoo's the net's activation)")
    if not c['downsample_in_first_stage']:
        why.append("downsample_in_first_stage=False (regzoo's first stage always strides 2)")
    if not isinstance(widths, (list, tuple)) or not isinstance(depths, (list, tuple)) or len(widths) != len(depths):
        why.append(f'hidden_sizes={widths!r} and depths={depths!r} must be lists of one entry per stage')
    elif len(widths) > 4:
        why.append(f'{len(widths)} stages (regzoo dilates stages after the fourth, HF strides every one)')
    if not why:
        try:
            return RegNetCfg.from_stages(widths, depths, c['groups_width'], se_ratio=0.25 if layer == 'y' else 0.0,
                                         stem_width=c['embedding_size'], act=act)
        except ValueError as e:
            why.append(str(e))
    raise ValueError('regzoo cannot build this HF transformers RegNetConfig: ' + '; '.join(why))
