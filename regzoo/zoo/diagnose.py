"""Saying what is wrong with a weights file: ``CheckpointError`` and what a file looks like from its first bytes.

Every reader of weights (``regzoo.zoo.reading``, ``regzoo.zoo.loading``) raises its errors through here, so a
file that does not read is described the same way wherever it is met: what it looks like (an HTML page, a Git
LFS pointer, a truncated zip...) and what to do about it.
"""
from __future__ import annotations

from pathlib import Path

from regzoo.zoo.sharded import ShardError


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (corrupt, truncated, pickle-only) or does not fit the model."""


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


# what describe_file calls a file that cannot hold weights in any format regzoo reads
NOT_WEIGHTS_KINDS = ('a text', 'an HTML', 'a Git LFS', 'JSON', 'empty', 'an HDF5', 'a gzip')
NOT_WEIGHTS_FIX = 'pass a weights file (.safetensors, .pth, .pt, .bin) or a saved model / train.py run folder'


def not_weights(path: Path) -> CheckpointError | None:
    """The error for a file that is plainly no weights file (text, a web page, an LFS pointer, empty...), found
    from its first bytes before any reader tries it; None for anything that may be weights."""
    looks = describe_file(path)
    if looks.startswith(NOT_WEIGHTS_KINDS):
        return CheckpointError(f'{path} is not a checkpoint: the file is {looks}; {NOT_WEIGHTS_FIX}')
    return None


def unreadable(path: Path, what: str, err: Exception, downloaded: bool) -> CheckpointError:
    """The error for a file that does not read as ``what``: what it looks like, and what to do about it
    (``downloaded``: it lies in a download cache, so fetching it again is the fix)."""
    lines = str(err).split('WeightsUnpickler error:')[-1].strip().splitlines()
    detail = f'{type(err).__name__}: {lines[0][:160]}' if lines else type(err).__name__
    if not downloaded and (error := not_weights(path)):  # the reader's complaint ('KeyError: 101') is noise
        return error
    looks = describe_file(path)
    if downloaded:
        fix = 'it may be truncated or corrupt: delete it and fetch it again'
    else:
        fix = 'it may be truncated or corrupt'
    return CheckpointError(f'{path}: not a readable {what} ({detail}): the file is {looks}; {fix}')


def corrupt(path: Path, what: str, downloaded: bool) -> CheckpointError:
    """The error for a file whose bytes changed after it was written (a failed CRC or digest)."""
    fix = 'delete it and fetch it again' if downloaded else 'restore it from a good copy or re-save it'
    return CheckpointError(f'{path}: corrupt: {what}; {fix}')


def shard_error(e: ShardError) -> CheckpointError:
    """``regzoo.zoo.sharded``'s error as ours; a file that does not read is described as any unreadable file is."""
    return CheckpointError(f'{e}; the file is {describe_file(e.path)}' if e.cause is not None else str(e))
