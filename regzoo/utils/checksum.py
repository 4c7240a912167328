"""Checksums of weights: the sha256 regzoo stores in the safetensors files it writes, and the zip CRC check.

``tensor_digests`` defines the digest once: per tensor group (the top-level module: ``stem``, ``s1``..``s4``,
``head``; HF keys go one level deeper, e.g. ``regnet.encoder.stages.0``), sha256 over the group's tensors in
sorted key order, each as its name, dtype, shape and the sha256 of its raw bytes. ``digest_metadata`` turns them
into the safetensors metadata written (``regzoo_sha256``: the whole file; ``regzoo_sha256_groups``: JSON, per group);
``failed_groups`` says which groups of loaded tensors no longer match it. Files without it are not checked.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import torch

DIGEST_KEY = 'regzoo_sha256'
GROUPS_KEY = 'regzoo_sha256_groups'
_WRAPPERS = ('regnet', 'encoder', 'stages', 'module', 'model')  # prefixes that hold no module of their own


def tensor_group(key: str) -> str:
    """The group a tensor's digest belongs to: its top-level module (after wrapper prefixes such as HF's)."""
    parts = key.split('.')
    n = 0
    while n < len(parts) - 1 and parts[n] in _WRAPPERS:
        n += 1
    return '.'.join(parts[:n + 1])


_PARALLEL_BYTES = 2 ** 20  # tensors (zip records) this large are hashed in threads (hashlib and zlib release the GIL)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _map(fn, items: list, sizes: list[int]) -> list:
    """``[fn(x) for x in items]``, the large ones in a thread pool."""
    big = [i for i, size in enumerate(sizes) if size >= _PARALLEL_BYTES]
    results = [None] * len(items)
    if len(big) > 1 and _workers() > 1:
        with ThreadPoolExecutor(_workers()) as pool:
            for i, r in zip(big, pool.map(fn, [items[i] for i in big])):
                results[i] = r
    for i, item in enumerate(items):
        if results[i] is None:
            results[i] = fn(item)
    return results


def _bytes(tensor: torch.Tensor):
    t = tensor.detach().cpu().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b''


def tensor_digests(tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """group -> sha256 hex digest over its tensors in sorted key order.

    Each tensor contributes a line ``name NUL dtype NUL shape NUL sha256(bytes)``; the per-tensor hashes run in
    threads, so a 100 MB checkpoint is hashed on several cores.
    """
    names = sorted(tensors)
    datas = [_bytes(tensors[n]) for n in names]
    digests = _map(lambda b: hashlib.sha256(b).hexdigest(), datas, [len(b) for b in datas])
    hashes: dict[str, object] = {}
    for name, digest in zip(names, digests):
        t = tensors[name]
        line = f'{name}\0{str(t.dtype).removeprefix("torch.")}\0{tuple(t.shape)}\0{digest}\n'
        hashes.setdefault(tensor_group(name), hashlib.sha256()).update(line.encode())
    return {group: h.hexdigest() for group, h in sorted(hashes.items())}


def _total(groups: Mapping[str, str]) -> str:
    return hashlib.sha256(''.join(f'{g}\0{d}\n' for g, d in sorted(groups.items())).encode()).hexdigest()


def digest_metadata(tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """The safetensors metadata entries that let a reader verify ``tensors`` (see ``failed_groups``)."""
    groups = tensor_digests(tensors)
    return {DIGEST_KEY: _total(groups), GROUPS_KEY: json.dumps(groups, separators=(',', ':'))}


def failed_groups(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None) -> list[str] | None:
    """Groups of ``tensors`` whose digest differs from the one ``metadata`` records; None when it records none.

    A damaged record of the digests themselves shows as ``['(the digest metadata)']``.
    """
    metadata = metadata or {}
    if DIGEST_KEY not in metadata and GROUPS_KEY not in metadata:
        return None
    try:
        saved = json.loads(metadata[GROUPS_KEY])
        if not isinstance(saved, dict) or _total(saved) != metadata[DIGEST_KEY]:
            raise ValueError
    except (KeyError, ValueError, TypeError, AttributeError):
        return ['(the digest metadata)']
    found = tensor_digests(tensors)
    return [g for g in sorted(set(saved) | set(found)) if saved.get(g) != found.get(g)]


def bad_zip_record(path) -> str | None:
    """The first record of a zip file (torch.save's container) whose CRC-32 does not match; None if all do.

    Stored (uncompressed) records, as torch.save writes them, are checked from a memory map in threads;
    anything else goes through ``zipfile.testzip``. Raises ``zipfile.BadZipFile`` (or OSError) when the
    archive itself cannot be read.
    """
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        if any(i.compress_type != zipfile.ZIP_STORED or i.flag_bits & 0x1 for i in infos):
            return z.testzip()
    with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            spans = []
            for info in infos:
                head = info.header_offset
                if view[head:head + 4] != b'PK\x03\x04':
                    raise zipfile.BadZipFile(f'bad local header of record {info.filename!r}')
                n, m = struct.unpack('<HH', view[head + 26:head + 30])
                if bytes(view[head + 30:head + 30 + n]) != info.orig_filename.encode('utf-8', 'surrogateescape') \
                        and bytes(view[head + 30:head + 30 + n]).decode('cp437') != info.orig_filename:
                    raise zipfile.BadZipFile(f'record {info.filename!r}: its local header names another file')
                start = head + 30 + n + m
                if start + info.compress_size > len(mm):
                    raise zipfile.BadZipFile(f'record {info.filename!r} runs past the end of the file')
                spans.append((start, start + info.compress_size))
            crcs = _map(lambda span: zlib.crc32(view[span[0]:span[1]]), spans, [b - a for a, b in spans])
            return next((i.filename for i, crc in zip(infos, crcs) if crc != i.CRC), None)
        finally:
            view.release()
