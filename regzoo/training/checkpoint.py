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
import os
import random
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from regzoo.data.transforms import DataConfig
from regzoo.training.errors import TrainingInputError
from regzoo.utils.checksum import digest_metadata
from regzoo.utils.files import atomic_write
from regzoo.zoo.diagnose import CheckpointError
from regzoo.zoo.layout import (
    CONFIG_METADATA_KEY,
    CONFIG_NAME,
    RUN_LAST,
    RUN_STATE_KEYS,
    RUN_STATE_SUFFIX,
    WEIGHTS_SUFFIX,
)
from regzoo.zoo.pretrained import PretrainedCfg
from regzoo.zoo.reading import read_safetensors, read_torch
from regzoo.zoo.saving import timm_config, write_config

STAGING, PREVIOUS = 'next', 'prev'  # save_checkpoint's staged and previous pairs


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write weights whose metadata points to the run's config.json beside them (``write_run_config``)
    and carries the integrity digests of their tensors, checked on load (``regzoo.utils.checksum``)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    metadata = {'format': 'pt', **metadata, CONFIG_METADATA_KEY: CONFIG_NAME, **digest_metadata(tensors)}
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


def _pair(run_dir: Path, name: str) -> tuple[Path, Path]:
    return run_dir / f'{name}{WEIGHTS_SUFFIX}', run_dir / f'{name}{RUN_STATE_SUFFIX}'


def save_checkpoint(run_dir: Path, name: str, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Write the ``name`` weights/state pair into ``run_dir``; returns the state file's path.

    The last two pairs are kept: the new pair is first written whole as ``next.*`` (``STAGING``); only then
    does the old ``name`` pair become ``prev.*`` (``PREVIOUS``) and ``next.*`` become ``name.*``, so a failed
    write (a full disk) leaves every earlier file as it was, and a resume finds a good pair after a crash at
    any point (``read_resume_state`` tries ``name``, ``next``, ``prev``). A failed write raises OSError and
    removes what it staged.
    """
    save_id = uuid.uuid4().hex
    meta = {'save_id': save_id, 'epoch': str(state['epoch']), 'update': str(state['update'])}
    state = {**state, 'save_id': save_id, 'rng': rng_states()}
    staged = _pair(run_dir, STAGING)
    try:
        save_weights(staged[0], weights, meta)
        atomic_write(staged[1], lambda tmp: torch.save(state, tmp))
    except BaseException:
        for p in staged:
            p.unlink(missing_ok=True)
        raise
    current = _pair(run_dir, name)
    if all(p.is_file() for p in current):
        for src, dst in zip(current, _pair(run_dir, PREVIOUS)):
            os.replace(src, dst)
    for src, dst in zip(staged, current):
        os.replace(src, dst)
    return current[1]


def _stem_pair(path: str | Path) -> tuple[Path, Path]:
    """(weights, state) named by a run folder (its ``last`` pair), a ``*.state.pt`` or a ``*.safetensors`` file."""
    path = Path(path)
    if path.is_dir():
        path = path / f'{RUN_LAST}{RUN_STATE_SUFFIX}'
    name = path.name
    for suffix in (RUN_STATE_SUFFIX, WEIGHTS_SUFFIX):
        if name.endswith(suffix):
            stem = path.with_name(name[:-len(suffix)])
            break
    else:
        raise TrainingInputError(
            f'--resume {path}: expected a run folder, a *{RUN_STATE_SUFFIX} or a *{WEIGHTS_SUFFIX} file')
    return Path(f'{stem}{WEIGHTS_SUFFIX}'), Path(f'{stem}{RUN_STATE_SUFFIX}')


def _why(e: CheckpointError, path: Path) -> str:
    """What the reader found, for a --resume message: the error it hit, or its verdict on the bytes."""
    if (cause := e.__cause__) is not None:
        return f'{type(cause).__name__}: {(str(cause).splitlines() or [""])[0]}'
    return str(e).removeprefix(f'{path}: ')


def _read_pair(path: str | Path, weights_path: Path, state_path: Path
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    for p in (weights_path, state_path):
        if not p.is_file():
            raise TrainingInputError(f'--resume {path}: {p} not found '
                                     f'(a resume needs both {weights_path.name} and {state_path.name})')
    # the one reader of weights files (regzoo.zoo.reading): the zip CRCs and the digests are checked meanwhile
    try:
        state, verified = read_torch(state_path)
        verified()
    except CheckpointError as e:  # torch raises several types for truncated / foreign / unsafe files
        raise TrainingInputError(f'--resume: {state_path} is not a readable training state '
                                 f'({_why(e, state_path)})') from None
    missing = [k for k in RUN_STATE_KEYS if k not in state]
    if missing:
        raise TrainingInputError(f'--resume: {state_path} is not a regzoo training state (missing {missing})')
    try:
        weights, meta, verified = read_safetensors(weights_path, copy=True)
    except CheckpointError as e:
        raise TrainingInputError(f'--resume: {weights_path} is not a readable safetensors file '
                                 f'({_why(e, weights_path)})') from None
    try:
        verified()
    except CheckpointError as e:
        raise TrainingInputError(f'--resume: {e}') from None
    if meta.get('save_id') != state['save_id'] or any(
            k in meta and meta[k] != str(state[k]) for k in ('epoch', 'update')):
        raise TrainingInputError(f'--resume: {weights_path.name} and {state_path.name} come from different saves '
                                 '(interrupted while writing?); resume from another checkpoint')
    return weights, state


def read_resume_state(path: str | Path, warn: Callable[[str], object] | None = None
                      ) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    """The weights file, weights and training state of a save (what ``--resume`` reads).

    A corrupt or mismatched pair raises TrainingInputError, except that a ``last`` pair (a run folder, or its
    ``last.*`` files) that fails falls back to the staged ``next`` and then the ``prev`` pair ``save_checkpoint``
    keeps, with ``warn(message)`` naming the bad file and the pair used instead. Not
    ``zoo.loading.load_checkpoint``, which loads weights into a model.
    """
    first = _stem_pair(path)
    candidates = [first]
    if first[0].name == f'{RUN_LAST}{WEIGHTS_SUFFIX}':
        candidates += [pair for pair in (_pair(first[0].parent, STAGING), _pair(first[0].parent, PREVIOUS))
                       if any(p.exists() for p in pair)]
    errors: list[str] = []
    for weights_path, state_path in candidates:
        try:
            weights, state = _read_pair(path, weights_path, state_path)
        except TrainingInputError as e:
            errors.append(str(e).removeprefix('--resume: '))
            continue
        if errors:
            (warn or warnings.warn)(
                f'--resume: {errors[0]}; resuming from the previous checkpoint {state_path} instead '
                f'(epoch {state["epoch"]}, update {state["update"]})')
        return weights_path, weights, state
    if len(errors) == 1:
        message = errors[0]
        raise TrainingInputError(message if message.startswith('--resume') else f'--resume: {message}')
    raise TrainingInputError(f'--resume {path}: no usable checkpoint pair: ' + '; '.join(errors))
