"""Checkpoints: weights as safetensors, training state as a plain dict, the run's config.json, all written atomically.

A save ``<name>`` writes ``<name>.safetensors`` (model weights and BN buffers) and ``<name>.state.pt``
(optimizer, scheduler, EMA weights, epoch/step, RNG states, resolved args: only tensors and builtins,
so it loads with ``torch.load(weights_only=True)``). Both carry the same ``save_id`` so a pair torn
by a crash between the two renames is detected instead of silently mixed.

Every weights file's metadata names the run's ``config.json`` (timm's hub config: architecture, model_args,
num_classes, the class folder names as ``label_names``, and the eval data config the run validated with), so
``create_model(checkpoint_path=RUN or RUN/best.safetensors)`` and ``validate.py --checkpoint`` rebuild and
evaluate the model as the run did. One config describes all of a run's weights files: they share them.
"""
from __future__ import annotations

import dataclasses
import math
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from regzoo.data.transforms import DataConfig
from regzoo.training.errors import TrainingInputError
from regzoo.utils.files import atomic_write
from regzoo.zoo.loading import CONFIG_METADATA_KEY, CONFIG_NAME
from regzoo.zoo.pretrained import PretrainedCfg
from regzoo.zoo.saving import timm_config, write_config

STATE_SUFFIX = '.state.pt'
WEIGHTS_SUFFIX = '.safetensors'


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write weights whose metadata points to the run's config.json beside them (``write_run_config``)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    metadata = {'format': 'pt', **metadata, CONFIG_METADATA_KEY: CONFIG_NAME}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def run_pretrained_cfg(model: torch.nn.Module, base: PretrainedCfg | None, train_size: tuple[int, int],
                       data: DataConfig) -> PretrainedCfg:
    """The pretrained cfg of a run's weights: ``base`` (the starting weight's, else a blank one for the arch)
    with the run's classifier and the data config it trained (``input_size``) and validated with (the rest).

    Not the starting weight any more: no tag, label set or published numbers. The eval size is the test size
    when it differs from the train size, so ``resolve_data_config`` (test size by default) gives back ``data``.
    """
    base = base if isinstance(base, PretrainedCfg) else PretrainedCfg(model.arch, '')
    train_input = (data.input_size[0], *train_size)
    reduction = model.feature_info[-1]['reduction']
    changes = dict(
        tag='', num_classes=model.num_classes, label_set=None, top1=None, top5=None, metrics_source=None,
        input_size=train_input, test_input_size=None if tuple(data.input_size) == train_input else data.input_size,
        min_input_size=None, pool_size=tuple(math.ceil(s / reduction) for s in train_size), test_pool_size=None,
        crop_pct=data.crop_pct, test_crop_pct=None, crop_mode=data.crop_mode, interpolation=data.interpolation,
        mean=data.mean, std=data.std)
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    return base.replace(**{k: v for k, v in changes.items() if k in fields})


def write_run_config(run_dir: Path, model: torch.nn.Module, cfg: PretrainedCfg, label_names: list[str]) -> Path:
    """The run's ``config.json`` (timm's hub layout, through the one writer ``regzoo.zoo.saving`` has)."""
    return write_config(run_dir / CONFIG_NAME, timm_config(model, pretrained_cfg=cfg, label_names=label_names))


def rng_states() -> dict[str, Any]:
    """Global RNG states as tensors and builtins (numpy's own tuple is not weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': pos,
                      'has_gauss': has_gauss, 'gauss': gauss},
            'python': {'version': version, 'state': list(py_state), 'gauss': py_gauss}}


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states['torch'])
    if states['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])
    n = states['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['gauss']))
    p = states['python']
    random.setstate((p['version'], tuple(p['state']), p['gauss']))


def save_checkpoint(run_dir: Path, name: str, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Write the ``name`` weights/state pair into ``run_dir``; returns the state file's path."""
    save_id = uuid.uuid4().hex
    meta = {'save_id': save_id, 'epoch': str(state['epoch']), 'update': str(state['update'])}
    save_weights(run_dir / f'{name}{WEIGHTS_SUFFIX}', weights, meta)
    state = {**state, 'save_id': save_id, 'rng': rng_states()}
    state_path = run_dir / f'{name}{STATE_SUFFIX}'
    atomic_write(state_path, lambda tmp: torch.save(state, tmp))
    return state_path


def resume_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, state) for a run folder, a ``*.state.pt`` file or a ``*.safetensors`` file."""
    path = Path(path)
    if path.is_dir():
        path = path / f'last{STATE_SUFFIX}'
    name = path.name
    for suffix in (STATE_SUFFIX, WEIGHTS_SUFFIX):
        if name.endswith(suffix):
            stem = path.with_name(name[:-len(suffix)])
            break
    else:
        raise TrainingInputError(
            f'--resume {path}: expected a run folder, a *{STATE_SUFFIX} or a *{WEIGHTS_SUFFIX} file')
    weights, state = Path(f'{stem}{WEIGHTS_SUFFIX}'), Path(f'{stem}{STATE_SUFFIX}')
    for p in (weights, state):
        if not p.is_file():
            raise TrainingInputError(
                f'--resume {path}: {p} not found (a resume needs both {weights.name} and {state.name})')
    return weights, state


def read_resume_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and training state of a save (what ``--resume`` reads); corrupt or mismatched files raise
    TrainingInputError. Not ``zoo.loading.load_checkpoint``, which loads weights into a model."""
    weights_path, state_path = resume_paths(path)
    try:
        state = torch.load(state_path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign / unsafe files
        raise TrainingInputError(f'--resume: {state_path} is not a readable training state ({type(e).__name__}: '
                                 f'{str(e).splitlines()[0] if str(e) else ""})') from None
    required = ('save_id', 'epoch', 'update', 'step_in_epoch', 'optimizer', 'scheduler', 'args', 'rng')
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise TrainingInputError(f'--resume: {state_path} is not a regzoo training state (missing {missing})')
    try:
        with safe_open(str(weights_path), 'pt') as f:
            meta = f.metadata() or {}
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise TrainingInputError(f'--resume: {weights_path} is not a readable safetensors file ({e})') from None
    if meta.get('save_id') != state['save_id']:
        raise TrainingInputError(f'--resume: {weights_path.name} and {state_path.name} come from different saves '
                                 '(interrupted while writing?); resume from another checkpoint')
    return weights, state
