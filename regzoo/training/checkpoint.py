"""Checkpoints: weights as safetensors, training state as a plain dict, both written atomically.

A save ``<name>`` writes ``<name>.safetensors`` (model weights and BN buffers) and ``<name>.state.pt``
(optimizer, scheduler, EMA weights, epoch/step, RNG states, resolved args: only tensors and builtins,
so it loads with ``torch.load(weights_only=True)``). Both carry the same ``save_id`` so a pair torn
by a crash between the two renames is detected instead of silently mixed.
"""
from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from regzoo.training.errors import TrainingInputError
from regzoo.utils.files import atomic_write

STATE_SUFFIX = '.state.pt'
WEIGHTS_SUFFIX = '.safetensors'


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


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
