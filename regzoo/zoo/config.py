"""A saved model's ``config.json`` as regzoo reads it: timm's hub config or HF transformers' RegNet config.

One reading for every place a config.json is met: a saved folder or a train.py run (``regzoo.zoo.loading``'s
``Checkpoint``), and a hub repo (``regzoo.zoo.hub_names``). timm's names an ``architecture`` and carries a
``pretrained_cfg``, ``model_args`` and ``label_names``; HF's (``model_type: regnet``) says only the input
channels and the head, and names its classes in ``id2label``.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from regzoo.data import labels
from regzoo.zoo.diagnose import CheckpointError
from regzoo.zoo.pretrained_cfg import TIMM_CFG_KEYS, PretrainedCfg


def read_config(path: Path) -> dict:
    """A config.json's JSON object; a file that is not one raises ``CheckpointError`` naming it."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f'{path}: not a readable JSON config ({e})') from e
    if not isinstance(config, dict):
        raise CheckpointError(f'{path}: a config.json must hold a JSON object, not a {type(config).__name__}')
    return config


def is_hf_config(config: Mapping) -> bool:
    """Whether ``config`` is HF transformers' RegNet config (its weights are in HF's layout)."""
    return config.get('model_type') == 'regnet'


def config_arch(config: Mapping) -> str | None:
    """The architecture timm's config names; None for HF's (it names none)."""
    return config.get('architecture')


def config_label_names(config: Mapping) -> tuple[str, ...] | None:
    """Class names in classifier order that a config.json records (timm's top-level ``label_names``, or in its
    ``pretrained_cfg``); None when it has none."""
    names = config.get('label_names') or (config.get('pretrained_cfg') or {}).get('label_names')
    return tuple(str(n) for n in names) if isinstance(names, (list, tuple)) and names else None


def config_model_args(config: Mapping) -> dict:
    """Build kwargs timm's config.json records (in_chans, output_stride, RegNetCfg fields...); {} for HF's."""
    return dict(config.get('model_args') or {}) if config_arch(config) else {}


def config_pretrained_cfg(config: Mapping, arch: str, num_classes: int) -> PretrainedCfg | None:
    """The eval settings ``config`` carries for ``arch`` (fields we do not know are dropped); None: none.

    timm's config has a ``pretrained_cfg``; HF's says only the input channels and the head size
    (``num_classes``: the weights' head), and its labels are names, not a label set we know: the rest are the
    defaults.
    """
    if is_hf_config(config):
        return with_label_names(PretrainedCfg(
            arch, '', num_classes=num_classes, label_set=None,
            input_size=(config.get('num_channels', 3), *PretrainedCfg.input_size[1:])), config)
    saved = config.get('pretrained_cfg') if config_arch(config) else None
    if not saved:
        return None
    # timm's keys or regzoo's (older saves); class names stand at the top level, where timm writes them
    known = set(TIMM_CFG_KEYS) | {f.name for f in dataclasses.fields(PretrainedCfg)}
    values = {k: v for k, v in saved.items() if k in known}
    if (names := config_label_names(config)) is not None:
        values['label_names'] = names
    return PretrainedCfg.from_dict(values, arch=arch)


def with_label_names(cfg: PretrainedCfg, config: Mapping) -> PretrainedCfg:
    """``cfg`` with an HF config's ``id2label`` as its class names, when they name its classifier's classes.

    HF's labels are descriptions ('tench, Tinca tinca'): when they are a packaged label set's, that set (its
    ids and descriptions); otherwise the names themselves.
    """
    id2label = config.get('id2label') or {}
    n = cfg.num_classes or 0
    names = [id2label.get(str(i), id2label.get(i)) for i in range(n)]
    if not n or len(id2label) != n or any(name is None for name in names):
        return cfg
    names = tuple(str(name) for name in names)
    if names == tuple(f'LABEL_{i}' for i in range(n)):  # transformers' placeholders name no class
        return cfg
    label_set = next((s for s in labels.PACKAGED if labels.label_descriptions(s) == names), None)
    return cfg.replace(label_set=label_set, class_names=None if label_set else names)
