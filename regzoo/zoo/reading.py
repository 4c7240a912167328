"""Reading weights files and verifying their bytes: the one reader of safetensors files, shards and torch files.

Nothing here unpickles arbitrary objects: safetensors files are read with safetensors, torch files with
``torch.load(weights_only=True)``. The bytes are verified before the weights are used: the CRC-32 of every zip
record of a torch file (torch does not check them) runs in a background thread while the file is unpickled;
the integrity digests of the safetensors files regzoo writes (``regzoo.utils.checksum``: xxh3-128, or sha256
in older files) are checked as the file is read (see ``read_safetensors`` for why not in the background). The
caller gets a function that raises what the check found (``Wait``) and calls it before the weights are used.
Each file is opened once.

Used by ``regzoo.zoo.loading`` (a weights file), by it for each shard of a sharded checkpoint, and by
``regzoo.training.checkpoint`` (a run's weights when resuming). Errors are ``CheckpointError`` naming the file.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from regzoo.utils.checksum import bad_zip_record, failed_groups, stored_digest
from regzoo.utils.names import few
from regzoo.zoo.diagnose import CheckpointError, corrupt, unreadable
from regzoo.zoo.fetch import is_download

Wait = Callable[[], None]  # waits for a background check of a file's bytes; raises what it found


def in_background(check: Callable[[], None]) -> Wait:
    """Start ``check`` in a daemon thread; the function returned waits for it and raises what it raised.

    Verification runs beside the work that follows a read (unpickling, building the model): xxhash, hashlib and
    zlib release the GIL, so on a multi-core machine the check costs little wall time (docs/checkpoint-formats.md).
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


def checked_now(check: Callable[[], None]) -> Wait:
    """Run ``check`` now; the function returned raises what it raised (the same contract as ``in_background``)."""
    try:
        check()
    except BaseException as e:  # noqa: BLE001 - handed to the caller of wait()
        found = e  # `e` is unbound when the except block ends

        def failed() -> None:
            raise found
        return failed
    return lambda: None


def read_safetensors(path: Path, copy: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str], Wait]:
    """A safetensors file's tensors, its metadata, and the wait for the check of its digests (running meanwhile).

    ``copy=False``: the tensors safetensors gives, read from one opening of the file (they may live in its
    mapping; a parameter must not, so whoever keeps them copies them). ``copy=True``: each tensor copied out as
    soon as it is read, the file opened once for its header and then once per tensor: safetensors maps its
    tensors from the file and every page read stays resident while the file is mapped, so this holds the
    tensors plus one instead of twice the file (shards of a 10B model). The copies own their memory (and
    torch's 64-byte alignment).

    The digests are checked here, not in a background thread: hashing touches every mapped page first, so the
    copy into the parameters that follows faults none, and in the background the check's per-tensor Python
    contended with the model build for the GIL and the cores (measured on 2 cores, regnety_064: +27 % of
    ``create_model(checkpoint_path=)`` in the background, about half that here; benchmarks/verify_overhead.py).
    """
    from safetensors import safe_open
    try:
        with safe_open(str(path), 'pt') as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            tensors = {} if copy else {name: f.get_tensor(name) for name in names}
        for name in names if copy else ():
            with safe_open(str(path), 'pt') as f:
                tensors[name] = f.get_tensor(name).clone(memory_format=torch.contiguous_format)
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError/ValueError
        raise unreadable(path, 'safetensors file', e, is_download(path)) from e

    def check() -> None:
        if failed := failed_groups(tensors, metadata):
            digest = stored_digest(metadata)
            raise corrupt(path, f'the tensor data of group {few(failed)} no longer matches the {digest.name} '
                                f'digest ({digest.key}) stored in its metadata when regzoo wrote it',
                          is_download(path))
    return tensors, metadata, checked_now(check)


def _check_zip(path: Path) -> None:
    """CRC-32 of every record of a zip-based torch file (torch does not check them)."""
    try:
        with path.open('rb') as f:
            if f.read(4) != b'PK\x03\x04':
                return  # a legacy pickle or not a torch file at all: torch.load says why
        bad = bad_zip_record(path)
    except Exception as e:  # BadZipFile, OSError, EOFError, zlib.error...: a damaged archive
        raise unreadable(path, 'torch checkpoint', e, is_download(path)) from e
    if bad is not None:
        raise corrupt(path, f'the zip record {bad!r} fails its CRC-32 check (the bytes changed after saving)',
                      is_download(path))


def read_torch(path: Path) -> tuple[Mapping, Wait]:
    """A torch file's contents (``torch.load(weights_only=True)``; its tensors own their memory) and the wait for
    the CRC check of its zip records, which runs while it is unpickled (the restricted unpickler is safe on
    damaged bytes); when unpickling fails, a failed CRC is the error reported."""
    verified = in_background(lambda: _check_zip(path))
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
        raise unreadable(path, 'torch checkpoint', e, is_download(path)) from e
    if not isinstance(obj, Mapping):
        verified()
        raise CheckpointError(f'{path}: holds a {type(obj).__name__}, not a state dict or checkpoint mapping')
    return obj, verified


def read_weights_file(path: Path, copy: bool = False) -> tuple[Mapping, dict[str, str], Wait]:
    """Any weights file: its contents, its metadata ({} but for safetensors) and the wait for its check.
    ``copy``: safetensors tensors that own their memory (``read_safetensors``); torch's always do."""
    if path.suffix == '.safetensors':
        return read_safetensors(path, copy)
    obj, verified = read_torch(path)
    return obj, {}, verified


def read_verified(path: Path) -> Mapping:
    """A weights file's contents, each tensor owning its memory, its bytes verified (shards are read so)."""
    obj, _, verified = read_weights_file(path, copy=True)
    verified()
    return obj
