"""Reading checkpoints safely, converting them to regzoo's layout, fitting them to a model and loading strictly.

Nothing here unpickles arbitrary objects: files are read with safetensors or ``torch.load(weights_only=True)``,
zip records are CRC-checked first and regzoo's own files carry sha256 digests that are verified. Finding
pretrained weights (file, HF hub cache/download, URL) is ``regzoo.zoo.fetch``.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn as nn

from regzoo.data import labels
from regzoo.models.design import make_stages
from regzoo.models.layers import init_classifier
from regzoo.utils.checksum import DIGEST_KEY, bad_zip_record, failed_groups
from regzoo.zoo.cfgs import MODEL_CFGS
from regzoo.zoo.convert import to_regzoo
from regzoo.zoo.hf_processor import PROCESSOR_NAME, read_processor, with_processor
from regzoo.zoo.pretrained import TIMM_CFG_KEYS, PretrainedCfg
from regzoo.zoo.sharded import (
    BIN_INDEX,
    INDEX_NAMES,
    SAFETENSORS_INDEX,
    ShardError,
    is_index,
    load_tensors,
    meta_tensors,
    read_index,
    read_shards,
)

_LOGGER = logging.getLogger(__name__)
DIR_FILENAMES = ('model.safetensors', 'pytorch_model.bin')  # safetensors first: it cannot carry code
# the weights files a saved folder or a hub repo is read from, in transformers' order: safetensors (one file,
# then shards) before pickles (one file, then shards)
HUB_FILENAMES = (DIR_FILENAMES[0], SAFETENSORS_INDEX, DIR_FILENAMES[1], BIN_INDEX)
CONFIG_NAME = 'config.json'
# a train.py run folder: its weights files, in the order a folder path picks them, and what each one is
RUN_WEIGHTS = {'best.safetensors': 'the best epoch', 'last.safetensors': 'the last epoch',
               'ema.safetensors': 'the EMA weights'}
RUN_STATE_SUFFIX = '.state.pt'  # train.py's training state beside <name>.safetensors (no weights: for --resume)
CONFIG_METADATA_KEY = 'config'  # safetensors metadata: the name of the config.json beside the file that describes it
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.pyth', '.torch', '.ckpt')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (corrupt, truncated, pickle-only) or does not fit the model."""


def config_label_names(config: Mapping) -> tuple[str, ...] | None:
    """Class names in classifier order that a config.json records (timm's top-level ``label_names``, or in its
    ``pretrained_cfg``); None when it has none."""
    names = config.get('label_names') or (config.get('pretrained_cfg') or {}).get('label_names')
    return tuple(str(n) for n in names) if isinstance(names, (list, tuple)) and names else None


@dataclass(frozen=True)
class Checkpoint:
    """Weights read from a file or directory, converted to our (timm's) key layout."""
    state_dict: Mapping[str, torch.Tensor]
    path: str
    source_format: str
    config: Mapping = field(default_factory=lambda: MappingProxyType({}))  # a saved dir's config.json
    # checks of the file's bytes still running in the background (``read_checkpoint(defer_verification=True)``)
    pending: tuple[Callable[[], None], ...] = field(default=(), repr=False, compare=False)

    def verify(self) -> None:
        """Wait for the background checks of the file's bytes (zip CRC, sha256 digests); raise what they found.

        Weights must not be used before this returns: ``apply_checkpoint`` calls it first.
        """
        for check in self.pending:
            check()

    @property
    def arch(self) -> str | None:
        return self.config.get('architecture')  # timm's hub config names it; HF's does not

    @property
    def label_names(self) -> tuple[str, ...] | None:
        """Class names in classifier order (timm's ``label_names``: top level, or in ``pretrained_cfg``)."""
        return config_label_names(self.config)

    @property
    def model_args(self) -> dict:
        """Build kwargs a timm-style config.json records (in_chans, output_stride, RegNetCfg fields...)."""
        return dict(self.config.get('model_args') or {}) if self.arch else {}

    def num_classes(self, classifier: str = 'head.fc') -> int:
        weight = self.state_dict.get(f'{classifier}.weight')
        return 0 if weight is None or weight.ndim == 0 else weight.shape[0]

    def in_chans(self, first_conv: str = 'stem.conv') -> int | None:
        """Input channels of the first conv (None when the checkpoint has no such weight)."""
        weight = self.state_dict.get(f'{first_conv}.weight')
        return None if weight is None or weight.ndim != 4 else weight.shape[1]

    def pretrained_cfg(self, arch: str) -> PretrainedCfg | None:
        """The eval settings a saved config.json carries (fields we do not know are dropped).

        timm's config has a ``pretrained_cfg``; HF's says only the input channels and the head size,
        and its labels are names, not a label set we know; the eval transform is its folder's
        ``preprocessor_config.json`` (``regzoo.zoo.hf_processor``), else the defaults.
        """
        if self.config.get('model_type') == 'regnet':
            return with_processor(with_label_names(PretrainedCfg(
                arch, '', num_classes=self.num_classes(), label_set=None,
                input_size=(self.config.get('num_channels', 3), *PretrainedCfg.input_size[1:])), self.config),
                read_processor(Path(self.path).parent), Path(self.path).parent / PROCESSOR_NAME)  # eval transform
        saved = self.config.get('pretrained_cfg') if self.arch else None
        if not saved:
            return None
        # timm's keys or regzoo's (older saves); class names stand at the top level, where timm writes them
        known = set(TIMM_CFG_KEYS) | {f.name for f in dataclasses.fields(PretrainedCfg)}
        values = {k: v for k, v in saved.items() if k in known}
        if self.label_names is not None:
            values['label_names'] = self.label_names
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


# ---------------------------------------------------------------------------------------------- reading files

def describe_file(path: Path) -> str:
    """What a file looks like from its first bytes, and its size: 'a text file, 26 bytes', 'an HTML page ...'."""
    try:
        size = path.stat().st_size
        with path.open('rb') as f:
            head = f.read(512)
    except OSError as e:
        return f'unreadable ({e})'
    if size == 0:
        return 'empty, 0 bytes'
    shown = f'{size} bytes' if size < 2 ** 20 else f'{size / 2 ** 20:.1f} MiB'
    return f'{_file_kind(head)}, {shown}'


def _file_kind(head: bytes) -> str:
    if head.startswith((b'PK\x03\x04', b'PK\x05\x06')):
        return "a zip archive (the container torch.save writes)"
    if head[:1] == b'\x80' and head[1:2] in (b'\x02', b'\x03', b'\x04', b'\x05'):
        return 'a pickle (the legacy torch.save format, or a plain pickle)'
    if len(head) > 8 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') < 2 ** 27:
        return 'a safetensors file'
    if head.startswith(b'\x89HDF\r\n\x1a\n'):
        return 'an HDF5 file (e.g. Keras .h5 weights)'
    if head.startswith(b'\x1f\x8b'):
        return 'a gzip-compressed file'
    for cut in range(4):  # the 512-byte head may end inside a multi-byte character
        try:
            text = head[:len(head) - cut].decode('utf-8')
            break
        except UnicodeDecodeError:
            continue
    else:
        return 'binary data of no format regzoo reads'
    if any(not (c.isprintable() or c in '\r\n\t') for c in text):
        return 'binary data of no format regzoo reads'
    lower = text.lstrip().lower()
    if lower.startswith(('<!doctype html', '<html')) or '<html' in lower:
        return 'an HTML page (a web page saved in place of the file, e.g. a login or error page)'
    if lower.startswith('version https://git-lfs'):
        return 'a Git LFS pointer (the weights themselves were never fetched: `git lfs pull`)'
    if lower.startswith(('{', '[')):
        return 'JSON text'
    return 'a text file'


def _is_download(path: Path) -> bool:
    """Whether ``path`` lies in a download cache (the HF hub cache or torch.hub's checkpoints folder)."""
    path = Path(os.path.abspath(path))
    caches = (hub_cache_dir(), url_cache_path('x').parent)
    return any(path.is_relative_to(os.path.abspath(cache)) for cache in caches)


def _unreadable(path: Path, what: str, err: Exception) -> CheckpointError:
    """The error for a file that does not read as ``what``: what it looks like, and what to do about it."""
    lines = str(err).split('WeightsUnpickler error:')[-1].strip().splitlines()
    detail = f'{type(err).__name__}: {lines[0][:160]}' if lines else type(err).__name__
    looks = describe_file(path)
    if _is_download(path):
        fix = 'it may be truncated or corrupt: delete it and fetch it again'
    elif looks.startswith(('a text', 'an HTML', 'a Git LFS', 'JSON', 'empty', 'an HDF5', 'a gzip')):
        fix = 'it is not a weights file regzoo reads'
    else:
        fix = 'it may be truncated or corrupt'
    return CheckpointError(f'{path}: not a readable {what} ({detail}): the file is {looks}; {fix}')


def _corrupt(path: Path, what: str) -> CheckpointError:
    fix = 'delete it and fetch it again' if _is_download(path) else 'restore it from a good copy or re-save it'
    return CheckpointError(f'{path}: corrupt: {what}; {fix}')


def _in_background(check: Callable[[], None]) -> Callable[[], None]:
    """Start ``check`` in a daemon thread; the function returned waits for it and raises what it raised.

    Verification runs beside the work that follows a read (unpickling, building the model): hashlib and zlib
    release the GIL, so on a multi-core machine the check costs little wall time (docs/checkpoint-formats.md).
    """
    raised: list[BaseException] = []

    def run() -> None:
        try:
            check()
        except BaseException as e:  # noqa: BLE001 - handed to the caller of wait()
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True, name='regzoo-verify')
    thread.start()

    def wait() -> None:
        thread.join()
        if raised:
            raise raised[0]
    return wait


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], Callable[[], None]]:
    from safetensors import safe_open
    from safetensors.torch import load_file
    try:
        tensors = load_file(path)
        with safe_open(str(path), 'pt') as f:
            metadata = f.metadata()
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError/ValueError
        raise _unreadable(path, 'safetensors file', e) from e

    def check() -> None:
        failed = failed_groups(tensors, metadata)
        if failed:
            raise _corrupt(path, f'the tensor data of group {_few(failed)} no longer matches the sha256 '
                                 f'({DIGEST_KEY}) stored in its metadata when regzoo wrote it')
    return tensors, _in_background(check)


def _check_zip(path: Path) -> None:
    """CRC-32 of every record of a zip-based torch file (torch does not check them)."""
    try:
        with path.open('rb') as f:
            if f.read(4) != b'PK\x03\x04':
                return  # a legacy pickle or not a torch file at all: torch.load says why
        bad = bad_zip_record(path)
    except Exception as e:  # BadZipFile, OSError, EOFError, zlib.error...: a damaged archive
        raise _unreadable(path, 'torch checkpoint', e) from e
    if bad is not None:
        raise _corrupt(path, f'the zip record {bad!r} fails its CRC-32 check (the bytes changed after saving)')


def _read_file_unverified(path: Path) -> tuple[Mapping, Callable[[], None]]:
    """The file's contents and a function that waits for the check of its bytes, which runs meanwhile.

    A torch file's zip CRCs are checked while ``torch.load(weights_only=True)`` unpickles it (the restricted
    unpickler is safe on damaged bytes); when unpickling fails, a failed CRC is the error reported.
    """
    if path.suffix == '.safetensors':
        return _read_safetensors(path)
    verified = _in_background(lambda: _check_zip(path))
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        verified()  # damaged bytes explain a failed unpickling best
        # a pickled class the safe unpickler does not allow: the file is fine, but not weights-only
        if blocked := re.search(r'(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)', str(e)):
            raise CheckpointError(
                f'{path}: refusing to load: the file pickles Python objects beyond tensors and plain containers '
                f'(e.g. {blocked[1]}). regzoo reads weights only with torch.load(weights_only=True), because '
                'unpickling can run arbitrary code. If you trust the file, re-save just its weights: '
                'torch.save(torch.load(path, weights_only=False)["state_dict"], "weights.pth") '
                '(or better, safetensors.torch.save_file)') from e
        raise _unreadable(path, 'torch checkpoint', e) from e
    if not isinstance(obj, Mapping):
        verified()
        raise CheckpointError(f'{path}: holds a {type(obj).__name__}, not a state dict or checkpoint mapping')
    return obj, verified


def _read_file(path: Path) -> Mapping:
    """The file's contents, its bytes verified (zip CRC-32s; the sha256 digests of files regzoo wrote)."""
    obj, verified = _read_file_unverified(path)
    verified()
    return obj


def _shard_error(e: ShardError) -> CheckpointError:
    """``regzoo.zoo.sharded``'s error as ours; a file that does not read is described as any unreadable file is."""
    return CheckpointError(f'{e}; the file is {describe_file(e.path)}' if e.cause is not None else str(e))


def _read_sharded(index_file: Path) -> dict[str, torch.Tensor]:
    """A sharded checkpoint's tensors as meta tensors: names, shapes and dtypes from the shard headers, no data.

    The data is read shard by shard when the checkpoint is applied (``apply_checkpoint``), so it is never in
    memory twice; a malformed index, a missing or unreadable shard raise here, naming the file.
    """
    try:
        return meta_tensors(read_index(index_file))
    except ShardError as e:
        raise _shard_error(e) from e


def _owns_memory(path: str | os.PathLike) -> bool:
    """Whether the tensors read from ``path`` own their memory, so a parameter may be one: ``torch.load``'s do
    (``_read_file``), safetensors maps its tensors from the file (and a parameter must not live in a file)."""
    return Path(path).suffix in TORCH_SUFFIXES


def _load_shards(model: nn.Module, checkpoint: Checkpoint, fit, allow_nonfinite: bool, device) -> None:
    """Read a sharded checkpoint into ``model`` one shard at a time: each shard is converted along with the rest
    of the checkpoint's names (a layout may need them all: HF's X vs Y blocks), checked for NaN/Inf, fitted by
    ``fit`` and loaded (``regzoo.zoo.sharded.load_tensors``)."""
    try:
        index = read_index(checkpoint.path)
        placeholders = meta_tensors(index)
        for shard, tensors in read_shards(index, placeholders, _read_file):
            try:
                converted, _ = to_regzoo({**placeholders, **tensors}, checkpoint.source_format)
            except ValueError as e:
                raise CheckpointError(f'{shard}: {e}') from e
            part = {k: v for k, v in converted.items() if not v.is_meta}
            check_finite(Checkpoint(part, str(shard), checkpoint.source_format), allow_nonfinite)
            load_tensors(model, fit(part), device, copy=False)  # read_shards' tensors own their memory
            del tensors, converted, part  # this shard's data goes before the next one is read
    except ShardError as e:
        raise _shard_error(e) from e


def _dir_weights_file(path: Path, log: bool = True) -> Path:
    for name in HUB_FILENAMES:
        if (path / name).is_file():
            return path / name
    run_files = [name for name in RUN_WEIGHTS if (path / name).is_file()]
    if run_files:  # a train.py run folder
        others = ', '.join(run_files[1:])
        (_LOGGER.info if log else _LOGGER.debug)('%s: a train.py run folder: using %s (%s)%s', path, run_files[0],
                                                 RUN_WEIGHTS[run_files[0]], f'; also there: {others}' if others else '')
        return path / run_files[0]
    candidates = sorted(p for p in path.iterdir() if p.suffix in ('.safetensors',) + TORCH_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    found = ', '.join(p.name for p in candidates) or 'none'
    raise CheckpointError(f'{path}: expected {" or ".join(DIR_FILENAMES)} (or {" or ".join(INDEX_NAMES)} over '
                          'their shards) or a single weights file '
                          f'(*.safetensors, {", ".join("*" + s for s in TORCH_SUFFIXES)}); found: {found}')


def _read_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f'{path}: not a readable JSON config ({e})') from e
    if not isinstance(config, dict):
        raise CheckpointError(f'{path}: a config.json must hold a JSON object, not a {type(config).__name__}')
    return config


def _config_pointer(path: Path) -> Path | None:
    """The config.json a safetensors file's metadata names (train.py's weights point to their run's config)."""
    if path.suffix != '.safetensors':
        return None
    from safetensors import safe_open
    try:
        with safe_open(str(path), 'pt') as f:
            name = (f.metadata() or {}).get(CONFIG_METADATA_KEY)
    except Exception:  # unreadable: _read_file says why
        return None
    if not name or Path(name).name != name:  # only a file beside the weights
        return None
    config = path.parent / name
    if not config.is_file():
        _LOGGER.warning('%s: its metadata points to %s, which is missing: its eval settings, class names and '
                        'model_args are unknown (defaults apply)', path, config)
        return None
    return config


def _refuse_run_file(path: Path, loaded: Mapping | None = None) -> None:
    """Files of a train.py run folder that hold no weights are refused, naming the file to use instead.

    ``<name>.state.pt`` (known by name beside ``<name>.safetensors``, or by its content once ``loaded``) is the
    optimizer/schedule/RNG state for ``--resume``; ``args.yaml``, ``summary.csv``, ``config.json`` describe the run.
    """
    beside = [path.parent / name for name in RUN_WEIGHTS if (path.parent / name).is_file()]
    folder = f'the run folder {path.parent} (it picks {beside[0].name})' if beside else ''
    if loaded is not None or path.name.endswith(RUN_STATE_SUFFIX):
        own = path.with_name(path.name[:-len(RUN_STATE_SUFFIX)] + '.safetensors')
        if loaded is not None and not {'save_id', 'optimizer', 'scheduler', 'args'} <= set(loaded):
            return
        if loaded is None and not own.is_file():
            return  # not named beside its weights: decided by its content once read
        files = [str(p) for p in dict.fromkeys(([own] if own.is_file() else []) + beside)]
        raise CheckpointError(
            f'{path} is train.py\'s training state for --resume (optimizer, schedule, RNG states), not model '
            f'weights: use {" or ".join(files) or "the .safetensors file saved with it"}'
            + (f', or {folder}' if folder else ''))
    if beside and path.suffix in ('.yaml', '.csv', '.json', '.txt', '.log'):
        raise CheckpointError(f'{path} describes a train.py run and holds no weights: use {folder}, '
                              f'or one of its weights files: {", ".join(p.name for p in beside)}')


def resolve_checkpoint(path: str | os.PathLike, log: bool = True) -> tuple[Path, dict]:
    """The weights file a checkpoint path stands for and the config that describes it, without reading tensors.

    A directory is read as timm / HF save it: ``model.safetensors``, else ``pytorch_model.bin``, else a
    train.py run folder's ``best.safetensors`` (then ``last``, ``ema``), else its single weights file; a
    ``config.json`` beside it names the arch (timm) or marks the HF layout. A safetensors file whose
    metadata names a config (train.py's do) gets that config. A train.py ``*.state.pt`` is refused with
    the file to use instead. ``log``: say which file a run folder stands for (at INFO level).
    """
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
            config = _read_json(path / CONFIG_NAME)
        path = _dir_weights_file(path, log)
    _refuse_run_file(path)
    if not config and (pointer := _config_pointer(path)):
        config = _read_json(pointer)
    return path, config


def read_checkpoint(path: str | os.PathLike, source_format: str | None = None,
                    defer_verification: bool = False) -> Checkpoint:
    """Read a weights file or a saved directory and convert it to our layout (format auto-detected when None).

    Which file and which config: ``resolve_checkpoint``. The file's bytes are verified (zip CRC-32s, the
    sha256 digests of files regzoo wrote) before this returns, or with ``defer_verification`` in the
    background until ``Checkpoint.verify()`` (which ``apply_checkpoint`` calls before using the weights).
    """
    path, config = resolve_checkpoint(path)
    if source_format is None and config.get('model_type') == 'regnet':
        source_format = 'hf'
    if path.name.endswith('.index.json'):
        raw, verified = _read_sharded(path), (lambda: None)
    else:
        raw, verified = _read_file_unverified(path)
    try:
        _refuse_run_file(path, raw)
        state_dict, fmt = to_regzoo(raw, source_format)
    except ValueError as e:  # CheckpointError included: damaged bytes explain either best
        verified()
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f'{path}: {e}') from e
    checkpoint = Checkpoint(state_dict, str(path), fmt, MappingProxyType(config), pending=(verified,))
    if not defer_verification:
        checkpoint.verify()
    return checkpoint


# ---------------------------------------------------------------------------------------------- fitting + loading

def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Refit an RGB first-conv weight (out, 3, k, k) to ``in_chans`` inputs.

    1 channel: sum over RGB, so a grey image g gives exactly the activations of the RGB image (g, g, g).
    More: repeat RGB cyclically, scaled by 3 / in_chans so the summed input signal keeps its scale.
    """
    src = weight.shape[1]
    if src == in_chans:
        return weight
    if src != 3:
        raise CheckpointError(f'cannot adapt a first conv with {src} input channels to in_chans={in_chans}: '
                              'adaptation starts from 3-channel (RGB) weights')
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3 / in_chans)
    return w.to(weight.dtype)


def adapt_input_cfg(cfg: PretrainedCfg, in_chans: int) -> PretrainedCfg:
    """``cfg``'s eval settings for ``in_chans`` inputs, mirroring what ``adapt_input_conv`` does to the weights.

    Input sizes take the channel count. A per-channel mean/std of another length is pooled for 1 channel
    (the weights are summed over RGB, so one grey channel stands for all three) and repeated cyclically
    for more (as the weights are).
    """
    def fit(values: tuple[float, ...]) -> tuple[float, ...]:
        if len(values) == in_chans:
            return tuple(values)
        if in_chans == 1:
            return (sum(values) / len(values),)
        return tuple(values[i % len(values)] for i in range(in_chans))
    test = cfg.test_input_size
    return cfg.replace(input_size=(in_chans, *cfg.input_size[1:]), mean=fit(cfg.mean), std=fit(cfg.std),
                       test_input_size=None if test is None else (in_chans, *test[1:]))


def _arch_name(model: nn.Module) -> str:
    if getattr(model, 'arch', None):
        return model.arch
    cfg = getattr(model, 'pretrained_cfg', None)
    if cfg is not None and cfg.arch:
        return cfg.arch
    return next((a for a, c in MODEL_CFGS.items() if c == getattr(model, 'cfg', None)), type(model).__name__)


def _archs_matching(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Registered archs whose stage depths/widths and SE use equal the checkpoint's (pure shape math, no models)."""
    try:
        depths = {}
        for key in state_dict:
            if m := re.match(r's(\d+)\.b(\d+)\.', key):
                depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]))
        found = tuple((depths[i], state_dict[f's{i}.b1.conv3.conv.weight'].shape[0],
                       state_dict[f's{i}.b1.conv1.conv.weight'].shape[0]) for i in sorted(depths))
    except KeyError:
        return []
    has_se = any('.se.fc1.' in k for k in state_dict)
    return [a for a, c in MODEL_CFGS.items() if bool(c.se_ratio) == has_se
            and tuple((s.depth, s.width, s.bottleneck_width) for s in make_stages(c)) == found]


def _few(items, n: int = 8) -> str:
    items = list(items)
    return ', '.join(items[:n]) + (f', ... and {len(items) - n} more' if len(items) > n else '')


def _check_fits(model: nn.Module, checkpoint: Checkpoint, state_dict: Mapping[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f'{k} checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
              for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    # a float weight stored as integers (or a counter as floats) is not a cast, it is the wrong data
    dtypes = [f'{k} checkpoint {str(v.dtype).removeprefix("torch.")} vs model '
              f'{str(expected[k].dtype).removeprefix("torch.")}' for k, v in state_dict.items()
              if k in expected and (v.is_floating_point() != expected[k].is_floating_point()
                                    or v.is_complex() or v.dtype == torch.bool)]
    if not (missing or unexpected or shapes or dtypes):
        return
    arch = _arch_name(model)
    lines = [f'checkpoint {checkpoint.path} ({checkpoint.source_format} layout) does not fit {arch}:']
    for label, items in (('missing from the checkpoint', missing), ('unexpected in the checkpoint', unexpected),
                         ('shape mismatches', shapes), ('dtype mismatches', dtypes)):
        if items:
            lines.append(f'  {label} ({len(items)}): {_few(items)}')
    matching = [a for a in _archs_matching(state_dict) if a != arch]
    if checkpoint.arch and checkpoint.arch != arch:
        lines.append(f'  its config.json says architecture {checkpoint.arch!r}')
    elif matching:
        lines.append(f'  its shapes match: {", ".join(matching)}')
    raise CheckpointError('\n'.join(lines))


def check_finite(checkpoint: Checkpoint, allow_nonfinite: bool = False) -> None:
    """NaN/Inf in the weights: a ``CheckpointError`` naming the file and the first bad tensors, or with
    ``allow_nonfinite=True`` a warning."""
    # a sum is NaN/Inf whenever a summand is (and rarely by overflow): a fast filter before the exact test
    bad = [k for k, v in checkpoint.state_dict.items() if v.is_floating_point() and v.numel()
           and not math.isfinite(v.sum().item()) and not bool(torch.isfinite(v).all())]
    if not bad:
        return
    what = f'{checkpoint.path}: NaN or Inf values in {len(bad)} tensor(s): {_few(bad, 5)}'
    if not allow_nonfinite:
        raise CheckpointError(f'{what}; the weights are broken (a diverged run or a damaged file); '
                              'pass allow_nonfinite=True to load them anyway')
    _LOGGER.warning('%s; loading them anyway (allow_nonfinite=True)', what)


def apply_checkpoint(model: nn.Module, checkpoint: Checkpoint, allow_nonfinite: bool = False,
                     device: torch.device | str | None = None) -> None:
    """Load ``checkpoint`` into ``model`` strictly, after fitting the classifier and first conv.

    A classifier of another size is left out and re-initialised deterministically (``init_classifier``);
    a first conv for another channel count is adapted (``adapt_input_conv``). Both are logged.
    NaN/Inf weights raise ``CheckpointError`` unless ``allow_nonfinite`` (then a warning; ``check_finite``).
    The file's bytes are verified first (``Checkpoint.verify``).

    A model built on the meta device takes the checkpoint's tensors themselves, cast to its dtype and put on
    ``device`` (default: torch's default device, CPU unless set), so the weights are never in memory twice.
    A sharded checkpoint (its tensors are meta tensors: ``read_checkpoint`` of an ``*.index.json``) is checked
    whole against the model first, then read, converted, checked for NaN/Inf and loaded one shard at a time.
    """
    checkpoint.verify()
    sharded = is_index(checkpoint.path)
    if not sharded:
        if no_data := [k for k, v in checkpoint.state_dict.items() if v.is_meta]:
            raise CheckpointError(f'{checkpoint.path}: holds tensors without data (saved from the meta device): '
                                  f'{_few(no_data, 5)}')
        check_finite(checkpoint, allow_nonfinite)
    cfg = getattr(model, 'pretrained_cfg', None) or PretrainedCfg('', '')
    arch, model_sd = _arch_name(model), model.state_dict()
    head = model.get_classifier()
    model_classes = head.out_features if isinstance(head, nn.Linear) else 0
    ckpt_classes = checkpoint.num_classes(cfg.classifier)
    head_keys = (f'{cfg.classifier}.weight', f'{cfg.classifier}.bias')
    new_head = ckpt_classes != model_classes
    if new_head:
        _LOGGER.info('%s: the weights have %d classes, the model %d: %s %s', arch, ckpt_classes, model_classes,
                     cfg.classifier, 're-initialised (init_classifier)' if model_classes else 'left out')
    conv_key = f'{cfg.first_conv}.weight'
    ckpt_conv, model_conv = checkpoint.state_dict.get(conv_key), model_sd.get(conv_key)
    adapt = (ckpt_conv is not None and model_conv is not None and ckpt_conv.ndim == model_conv.ndim == 4
             and ckpt_conv.shape[1] != model_conv.shape[1])
    if adapt:
        _LOGGER.info('%s: adapting %s from %d to %d input channels', arch, cfg.first_conv, ckpt_conv.shape[1],
                     model_conv.shape[1])

    def fit(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors (all, or one shard's) as the model takes them."""
        out = {k: v for k, v in tensors.items() if not (new_head and k in head_keys)}
        if adapt and conv_key in out:
            out[conv_key] = adapt_input_conv(out[conv_key], model_conv.shape[1])
        return out

    state_dict = fit(checkpoint.state_dict)
    # the model's own head stands in for a replaced one, so the strict check still covers everything else
    own_head = {k: model_sd[k] for k in head_keys if new_head and k in model_sd}
    _check_fits(model, checkpoint, {**state_dict, **own_head})
    if sharded:
        _load_shards(model, checkpoint, fit, allow_nonfinite, device)
    elif any(v.is_meta for v in model_sd.values()):
        load_tensors(model, state_dict, device, copy=not _owns_memory(checkpoint.path))
    else:
        model.load_state_dict({**state_dict, **own_head}, strict=True)
    if new_head and model_classes:
        if head.weight.is_meta:  # a model built on meta: the new head gets its memory here
            head.to_empty(device=torch.get_default_device() if device is None else device)
        init_classifier(head)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, source_format: str | None = None,
                    allow_nonfinite: bool = False) -> Checkpoint:
    """Load a local weights file or saved directory (any supported layout) into ``model``.

    ``allow_nonfinite``: load weights holding NaN/Inf with a warning instead of a ``CheckpointError``.
    """
    checkpoint = read_checkpoint(path, source_format)
    apply_checkpoint(model, checkpoint, allow_nonfinite)
    _LOGGER.info('%s: loaded %s (%s layout)', _arch_name(model), checkpoint.path, checkpoint.source_format)
    return checkpoint


# ---------------------------------------------------------------------------------------------- download caches

def hub_cache_dir() -> Path:
    """The HF hub cache as the environment says now: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    env = os.environ
    home = env.get('HF_HOME') or os.path.join(env.get('XDG_CACHE_HOME') or '~/.cache', 'huggingface')
    return Path(env.get('HF_HUB_CACHE') or env.get('HUGGINGFACE_HUB_CACHE') or os.path.join(home, 'hub')).expanduser()


def url_cache_path(url: str) -> Path:
    """Where URL downloads are kept: torch.hub's checkpoints folder (TORCH_HOME), by file name."""
    return Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(url.split('?')[0])
