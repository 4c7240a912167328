"""Write a model as a directory another library loads: HF transformers or timm's hub layout.

Both write ``model.safetensors`` + ``config.json`` (+ ``preprocessor_config.json`` for 'hf'): nothing pickled,
so loading them never runs code. Both keep the classifier's class names when the model's pretrained cfg has
names for its classes (``label_names`` fitting the head): HF's ``id2label``/``label2id`` (the human-readable
descriptions, as transformers' ImageNet repos), timm's top-level ``label_names`` (+ ``label_descriptions``).
Weights above ``max_shard_size`` (default 5GB, as transformers) are written as HF writes them: shards
``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json`` (``regzoo.zoo.sharded``), which
transformers and ``create_model(checkpoint_path=out_dir)`` read back (the latter shard by shard).

* ``format='hf'``: ``transformers.RegNetForImageClassification.from_pretrained(out_dir)`` loads it, and
  ``pipeline('image-classification', model=out_dir)`` / ``AutoImageProcessor`` use the weight's own eval transform
  from ``preprocessor_config.json`` (``regzoo.zoo.hf_processor``: where HF's processor cannot say it exactly).
  Only architectures HF's ``RegNetConfig`` can express (plain RegNetX/Y at output stride 32);
  anything else raises, naming the features HF lacks.
* ``format='timm'``: our keys are timm's; ``config.json`` is timm's hub config
  (``architecture``, ``num_classes``, ``num_features``, ``pretrained_cfg``, and ``model_args`` when the
  model differs from its registered architecture), read back by ``create_model(arch, checkpoint_path=out_dir)``
  and by ``timm.create_model(arch, pretrained_cfg_overlay=dict(file=out_dir / 'model.safetensors'))`` (not
  sharded: timm reads single files).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch.nn as nn

from regzoo.models.regnet import RegNet
from regzoo.utils.files import atomic_write
from regzoo.zoo.applying import adapt_input_cfg
from regzoo.zoo.builder import arch_cfg
from regzoo.zoo.card import model_card, write_model_card
from regzoo.zoo.cfgs import MODEL_CFGS
from regzoo.zoo.convert import hf
from regzoo.zoo.hf_processor import PROCESSOR_NAME, processor_config
from regzoo.zoo.layout import CONFIG_NAME
from regzoo.zoo.pretrained import PretrainedCfg
from regzoo.zoo.registry import REGISTRY
from regzoo.zoo.sharded import DEFAULT_MAX_SHARD_SIZE, parse_size, write_weights

SAVE_FORMATS = ('hf', 'timm')
# fields that say where the *original* weight lived: wrong for the copy we write
_LOCATION_FIELDS = ('hf_hub_id', 'hf_hub_filename', 'url', 'file', 'sha256')
_METRIC_FIELDS = ('top1', 'top5', 'metrics_source')


def save_pretrained(model: nn.Module, out_dir: str | os.PathLike, format: str = 'hf', arch: str | None = None,
                    card: bool = True, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> Path:
    """Write ``model`` to ``out_dir`` (created if needed) as ``config.json`` + ``model.safetensors``.

    Args:
        model: a ``regzoo.RegNet`` (not a ``features_only`` wrapper).
        out_dir: target directory; existing files of the same names are replaced.
        format: 'hf' (transformers) or 'timm'.
        arch: registered architecture name for 'timm' (default: the one whose config equals the model's).
        card: also write the model card, ``README.md`` (``regzoo.zoo.card``); a README.md that regzoo did not
            write is kept.
        max_shard_size: weights larger than this (bytes, or '500MB', '5GB' as transformers reads it) are
            written as shards of at most this size (one larger tensor alone in its shard) + their index.

    Returns:
        the directory written.
    """
    if format not in SAVE_FORMATS:
        raise ValueError(f'unknown format {format!r}; valid: {", ".join(SAVE_FORMATS)}')
    if not isinstance(model, RegNet):
        raise TypeError(f'save_pretrained needs a regzoo.RegNet, got {type(model).__name__}; '
                        'for a features_only model save the model it wraps')
    parse_size(max_shard_size)  # bad input fails before anything is written
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    processor = None
    if format == 'hf':
        config = hf.hf_config(model, class_descriptions(model))
        tensors = hf.from_regzoo(state_dict, se=bool(model.cfg.se_ratio))
        processor = processor_config(_own_cfg(model))
    else:
        config, tensors = timm_config(model, arch), state_dict
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # atomically, each file with the integrity digests (xxh3-128) of its tensors so a load finds a damaged one (regzoo.utils.checksum)
    write_weights(out, tensors, max_shard_size)
    write_config(out / CONFIG_NAME, config)
    if processor is not None:
        write_config(out / PROCESSOR_NAME, processor)
    if card:
        write_model_card(out, model_card(model, arch, folder=out, format=format))
    return out


def write_config(path: str | os.PathLike, config: dict) -> Path:
    """Write a config.json (atomically)."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + '\n'))


def _own_cfg(model: RegNet) -> PretrainedCfg:
    """The model's pretrained cfg (its eval settings and labels), or regzoo's defaults for its input channels."""
    cfg = getattr(model, 'pretrained_cfg', None) or PretrainedCfg(getattr(model, 'arch', '') or '', '')
    return adapt_input_cfg(cfg, model.in_chans)


def class_names(model: RegNet, cfg: PretrainedCfg | None = None) -> tuple[str, ...] | None:
    """The class ids of ``model``'s classifier in index order: its cfg's ``label_names`` when there are as many as
    the head has classes (as ``regzoo.predict`` reads them), else None."""
    cfg = cfg or getattr(model, 'pretrained_cfg', None)
    names = cfg.label_names if cfg is not None and model.num_classes else None
    return tuple(names) if names is not None and len(names) == model.num_classes else None


def class_descriptions(model: RegNet, cfg: PretrainedCfg | None = None) -> list[str] | None:
    """Human-readable class names, in classifier order (HF's ``id2label``, what pipelines show); None when unknown."""
    cfg = cfg or getattr(model, 'pretrained_cfg', None)
    names = class_names(model, cfg)
    if names is None:
        return None
    descriptions = cfg.label_descriptions or {}
    return [descriptions.get(name, name) for name in names]


def _resolve_arch(model: RegNet, arch: str | None) -> str:
    """The registered name to save under: ``arch=`` (aliases resolved), else the one the model was built as."""
    if arch is not None:
        return REGISTRY.resolve(arch)  # unknown names raise with close matches
    built_as = getattr(model, 'arch', None)
    if built_as in REGISTRY.names():
        return built_as
    matches = [name for name, cfg in MODEL_CFGS.items() if cfg == model.cfg]
    if matches:
        return matches[0]
    raise ValueError('save_pretrained: the model config matches no registered architecture; pass arch= '
                     '(the differing fields are then stored as model_args)')


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def timm_config(model: RegNet, arch: str | None = None, pretrained_cfg: PretrainedCfg | None = None,
                label_names: Sequence[str] | None = None) -> dict:
    """timm's hub ``config.json`` for ``model`` (what ``save_pretrained(format='timm')`` writes).

    ``pretrained_cfg`` stands in for the model's own (train.py passes the run's eval settings);
    ``label_names`` (class names in classifier order) go at the top level, where timm's writer puts them.
    """
    arch = _resolve_arch(model, arch)
    base = arch_cfg(arch)
    model_args = {f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(base)
                  if getattr(model.cfg, f.name) != getattr(base, f.name)}
    if model.in_chans != 3:
        model_args['in_chans'] = model.in_chans
    if model.head.pool_type != 'avg':
        model_args['global_pool'] = model.head.pool_type
    if any(s.dilation > 1 for s in model.stage_specs):
        model_args['output_stride'] = 32 // 2 ** sum(s.dilation > 1 for s in model.stage_specs)

    pretrained = pretrained_cfg or getattr(model, 'pretrained_cfg', None) or PretrainedCfg(arch=arch, tag='')
    changes = dict.fromkeys(_LOCATION_FIELDS)
    names = class_names(model, pretrained)
    if pretrained.num_classes != model.num_classes:
        # another head is not that weight any more: not its tag or its published numbers, and its label order
        # only when the cfg names the new head's classes (pretrained_cfg_overlay=dict(label_names=...))
        changes.update(dict.fromkeys(_METRIC_FIELDS), num_classes=model.num_classes, tag='')
        if names is None:
            changes.update(label_set=None, class_names=None)
    changes.update(source_format='timm')
    pretrained = adapt_input_cfg(pretrained.replace(**changes), model.in_chans)
    # timm's keys only, so timm reads the file too; the label names go to the top level, as timm writes them
    pretrained_cfg = {k: _jsonable(v) for k, v in pretrained.to_dict(remove_source=True).items()
                      if k not in ('label_names', 'label_descriptions')}
    config = dict(architecture=arch, num_classes=model.num_classes, num_features=model.num_features,
                  pretrained_cfg=pretrained_cfg)
    if label_names is not None:
        if len(label_names) != model.num_classes:
            raise ValueError(f'{len(label_names)} label names for a {model.num_classes}-class classifier')
        config['label_names'] = list(label_names)
    elif names is not None:
        config['label_names'] = list(names)
        if pretrained.label_set is not None:  # real descriptions (a set's); a fine-tune's names are their own
            config['label_descriptions'] = pretrained.label_descriptions
    if model_args:
        config['model_args'] = model_args
    return config
