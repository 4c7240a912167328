"""Loading checkpoints: a weights file or saved folder read, verified and converted to regzoo's layout.

Loading is one straight path (docs/design.md, "From create_model to weights"): find the file
(``regzoo.zoo.fetch`` for pretrained weights) -> resolve what a path stands for (``resolve_checkpoint``: a
folder's weights file, a train.py run's, the config.json that describes it) -> read and verify its bytes
(``regzoo.zoo.reading``, each file opened once, the digests checked in the background) -> convert the keys
(``regzoo.zoo.convert``) -> fit and apply them to the model (``regzoo.zoo.applying``). ``read_checkpoint``
does the middle three and returns a ``Checkpoint``; ``load_checkpoint`` all but the first.
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn as nn

from regzoo.utils.checksum import finite_when_written
from regzoo.zoo.applying import apply_checkpoint, arch_name
from regzoo.zoo.checkpoint import Checkpoint
from regzoo.zoo.config import config_label_names, is_hf_config, read_config
from regzoo.zoo.convert import to_regzoo
from regzoo.zoo.diagnose import CheckpointError, describe_file, not_weights, shard_error
from regzoo.zoo.layout import CONFIG_NAME, DIR_FILENAMES, HUB_FILENAMES, INDEX_NAMES, TORCH_SUFFIXES
from regzoo.zoo.reading import read_weights_file
from regzoo.zoo.runs import config_pointer, refuse_run_file, run_weights_file
from regzoo.zoo.sharded import ShardError, is_index, meta_tensors, read_index

_LOGGER = logging.getLogger(__name__)


def _folder_weights_file(path: Path, log: bool = True) -> Path:
    """The weights file a folder stands for: a saved folder's / hub snapshot's, a train.py run's, its only one."""
    for name in HUB_FILENAMES:
        if (path / name).is_file():
            return path / name
    if run := run_weights_file(path, log):
        return run
    candidates = sorted(p for p in path.iterdir() if p.suffix in ('.safetensors',) + TORCH_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    found = ', '.join(p.name for p in candidates) or 'none'
    raise CheckpointError(f'{path}: expected {" or ".join(DIR_FILENAMES)} (or {" or ".join(INDEX_NAMES)} over '
                          'their shards) or a single weights file '
                          f'(*.safetensors, {", ".join("*" + s for s in TORCH_SUFFIXES)}); found: {found}')


def _locate(path: str | os.PathLike, log: bool) -> tuple[Path, dict]:
    """The weights file a path stands for and the config.json of its folder ({} if none), reading no weights."""
    path = Path(path).expanduser()
    try:
        path.stat()
    except OSError as e:
        if path.is_symlink() and e.errno == errno.ELOOP:
            raise CheckpointError(f'{path}: a symlink loop (it resolves to itself through {os.readlink(path)}): '
                                  'point it at the weights file') from e
        if not path.exists():
            raise FileNotFoundError(f'checkpoint {path} does not exist'
                                    + (f' (a dangling symlink to {os.readlink(path)})' if path.is_symlink() else ''))
        raise CheckpointError(f'{path}: cannot be read ({e})') from e
    config = {}
    if path.is_dir():
        if (path / CONFIG_NAME).is_file():
            config = read_config(path / CONFIG_NAME)
        path = _folder_weights_file(path, log)
    return path, config


def _header_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's metadata, from its header alone ({} for other files, or one that does not read)."""
    if path.suffix != '.safetensors':
        return {}
    from safetensors import safe_open
    try:
        with safe_open(str(path), 'pt') as f:
            return f.metadata() or {}
    except Exception:  # unreadable: reading it says why
        return {}


def resolve_checkpoint(path: str | os.PathLike, log: bool = True) -> tuple[Path, dict]:
    """The weights file a checkpoint path stands for and the config that describes it, without reading tensors.

    A directory is read as timm / HF save it: ``model.safetensors``, else ``pytorch_model.bin`` (or their shard
    indexes), else a train.py run folder's ``best.safetensors`` (then ``last``, ``ema``), else its single weights
    file; a ``config.json`` beside it names the arch (timm) or marks the HF layout. A safetensors file whose
    metadata names a config (train.py's do) gets that config. A train.py ``*.state.pt`` is refused with
    the file to use instead. ``log``: say which file a run folder stands for (at INFO level).
    """
    path, config = _locate(path, log)
    refuse_run_file(path)  # a run's args.yaml / state: refused naming the file to use, before the generic check
    if path.is_file() and not is_index(path) and (error := not_weights(path)):  # e.g. notes.txt: say so now
        raise error
    if not config and (pointer := config_pointer(path, _header_metadata(path))):
        config = read_config(pointer)
    return path, config


def _read_sharded(index_file: Path) -> dict[str, torch.Tensor]:
    """A sharded checkpoint's tensors as meta tensors: names, shapes and dtypes from the shard headers, no data.

    The data is read shard by shard when the checkpoint is applied (``apply_checkpoint``), so it is never in
    memory twice; a malformed index, a missing or unreadable shard raise here, naming the file.
    """
    try:
        return meta_tensors(read_index(index_file))
    except ShardError as e:
        raise shard_error(e) from e


def read_checkpoint(path: str | os.PathLike, source_format: str | None = None,
                    defer_verification: bool = False) -> Checkpoint:
    """Read a weights file or a saved directory and convert it to our layout (format auto-detected when None).

    Which file and which config: ``resolve_checkpoint``; the file is opened once (``regzoo.zoo.reading``). Its
    bytes are verified (zip CRC-32s, the integrity digests of files regzoo wrote) before this returns, or with
    ``defer_verification`` in the background until ``Checkpoint.verify()`` (which ``apply_checkpoint`` calls
    before using the weights).
    """
    path, config = _locate(path, log=True)
    refuse_run_file(path)  # by name, before a run's args.yaml or state is read as weights
    if is_index(path):
        raw, metadata, verified = _read_sharded(path), {}, (lambda: None)
    else:
        raw, metadata, verified = read_weights_file(path)
    if not config and (pointer := config_pointer(path, metadata)):
        config = read_config(pointer)
    if source_format is None and is_hf_config(config):
        source_format = 'hf'
    try:
        refuse_run_file(path, raw, by_name=False)  # by contents: a training state under another name
        state_dict, fmt = to_regzoo(raw, source_format)
    except ValueError as e:  # CheckpointError included: damaged bytes explain either best
        verified()
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f'{path}: {e}') from e
    checkpoint = Checkpoint(state_dict, str(path), fmt, MappingProxyType(config), pending=(verified,),
                            finite_when_written=finite_when_written(metadata))
    if not defer_verification:
        checkpoint.verify()
    return checkpoint


def load_checkpoint(model: nn.Module, path: str | os.PathLike, source_format: str | None = None,
                    allow_nonfinite: bool = False, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> Checkpoint:
    """Load a local weights file or saved directory (any supported layout) into ``model``.

    ``allow_nonfinite``: load weights holding NaN/Inf with a warning instead of a ``CheckpointError``.
    ``device`` / ``dtype``: where and in what precision a model built on the meta device gets its weights
    (``apply_checkpoint``).
    """
    checkpoint = read_checkpoint(path, source_format)
    apply_checkpoint(model, checkpoint, allow_nonfinite, device, dtype)
    _LOGGER.info('%s: loaded %s (%s layout)', arch_name(model), checkpoint.path, checkpoint.source_format)
    return checkpoint


__all__ = ['Checkpoint', 'CheckpointError', 'apply_checkpoint', 'config_label_names', 'describe_file',
           'load_checkpoint', 'read_checkpoint', 'resolve_checkpoint']
