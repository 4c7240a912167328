"""train.py run folders as checkpoints: which weights file a run folder stands for, which config describes a
run's weights, and the run's files that hold no weights (refused, naming the file to use instead).

A run folder holds ``best.safetensors``, ``last.safetensors`` (and ``ema.safetensors``), each with its
``<name>.state.pt`` training state for ``--resume``, plus ``config.json``, ``args.yaml`` and ``summary.csv``
(``regzoo.zoo.layout``). Each weights file's safetensors metadata names the run's config.json.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from regzoo.zoo.diagnose import CheckpointError
from regzoo.zoo.layout import (
    CONFIG_METADATA_KEY,
    RUN_STATE_MARKERS,
    RUN_STATE_SUFFIX,
    RUN_WEIGHTS,
    WEIGHTS_SUFFIX,
)

_LOGGER = logging.getLogger(__name__)


def run_weights_file(folder: Path, log: bool = True) -> Path | None:
    """The weights file a run folder stands for (``best``, else ``last``, else ``ema``); None: no run folder.
    ``log``: say which one, and which others are there (at INFO level; else DEBUG)."""
    found = [name for name in RUN_WEIGHTS if (folder / name).is_file()]
    if not found:
        return None
    others = ', '.join(found[1:])
    (_LOGGER.info if log else _LOGGER.debug)('%s: a train.py run folder: using %s (%s)%s', folder, found[0],
                                             RUN_WEIGHTS[found[0]], f'; also there: {others}' if others else '')
    return folder / found[0]


def config_pointer(path: Path, metadata: Mapping[str, str] | None) -> Path | None:
    """The config.json a safetensors file's ``metadata`` names (train.py's weights point to their run's config),
    when it lies beside the file; None when it names none."""
    name = (metadata or {}).get(CONFIG_METADATA_KEY)
    if not name or Path(name).name != name:  # only a file beside the weights
        return None
    config = path.parent / name
    if not config.is_file():
        _LOGGER.warning('%s: its metadata points to %s, which is missing: its eval settings, class names and '
                        'model_args are unknown (defaults apply)', path, config)
        return None
    return config


def is_training_state(contents: Mapping) -> bool:
    """Whether a file's contents are train.py's training state (``regzoo.training.checkpoint``), not weights."""
    return set(RUN_STATE_MARKERS) <= set(contents)


def refuse_run_file(path: Path, contents: Mapping | None = None, by_name: bool = True) -> None:
    """Files of a train.py run folder that hold no weights are refused, naming the file to use instead.

    ``<name>.state.pt`` (known by name beside ``<name>.safetensors``, or by its ``contents`` once read) is the
    optimizer/schedule/RNG state for ``--resume``; ``args.yaml``, ``summary.csv``, ``config.json`` describe the run.
    ``by_name=False``: only the ``contents`` check (the name was checked before the file was read).
    """
    beside = [path.parent / name for name in RUN_WEIGHTS if (path.parent / name).is_file()]
    folder = f'the run folder {path.parent} (it picks {beside[0].name})' if beside else ''
    own = path.with_name(path.name.removesuffix(RUN_STATE_SUFFIX) + WEIGHTS_SUFFIX)
    named_state = by_name and path.name.endswith(RUN_STATE_SUFFIX) and own.is_file()
    if named_state or (contents is not None and is_training_state(contents)):
        files = [str(p) for p in dict.fromkeys(([own] if own.is_file() else []) + beside)]
        raise CheckpointError(
            f'{path} is train.py\'s training state for --resume (optimizer, schedule, RNG states), not model '
            f'weights: use {" or ".join(files) or "the .safetensors file saved with it"}'
            + (f', or {folder}' if folder else ''))
    if by_name and beside and path.suffix in ('.yaml', '.csv', '.json', '.txt', '.log'):
        raise CheckpointError(f'{path} describes a train.py run and holds no weights: use {folder}, '
                              f'or one of its weights files: {", ".join(p.name for p in beside)}')
