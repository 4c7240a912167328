"""Checksums of weights: the integrity digests regzoo stores in the safetensors files it writes, and the zip CRC check.

The digest is a fast non-cryptographic hash, xxh3-128 (the ``xxhash`` package): it is there to catch silent
corruption (a flipped bit, a truncated copy), which needs no cryptography, and it runs at memory speed, so
verifying a load costs little (docs/checkpoint-formats.md). A download from a URL is still checked against its
published sha256 (``regzoo.zoo.fetch``): that hash is the publisher's, and it must resist tampering.

``tensor_digests`` defines the digest once: per tensor group (the top-level module: ``stem``, ``s1``..``s4``,
``head``; HF keys go one level deeper, e.g. ``regnet.encoder.stages.0``), a hash over the group's tensors in
sorted key order, each as its name, dtype, shape and the hash of its raw bytes. ``digest_metadata`` turns them
into the safetensors metadata written (``regzoo_xxh3_128``: the whole file; ``regzoo_xxh3_128_groups``: JSON, per
group; ``regzoo_all_finite``: no NaN/Inf, so a verified load skips that scan: ``finite_when_written``);
``failed_groups`` says which groups of loaded tensors no longer match it. Files regzoo wrote before the
change carry the same structure with sha256 (``regzoo_sha256``, ``regzoo_sha256_groups``) and still verify.
Files without either are not checked.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

_WRAPPERS = ('regnet', 'encoder', 'stages', 'module', 'model')  # prefixes that hold no module of their own
# Tensors of at least _PARALLEL_BYTES are hashed in threads (xxhash and hashlib release the GIL), but only in a
# checkpoint of at least _PARALLEL_TOTAL: measured on 2 cores, a 123 MB file hashed serially in 13 ms and in a
# 2-thread pool in 19-44 ms (starting the pool and handing the GIL back and forth cost more than they saved);
# a 37 GB shard set (SEER-10B) is where threads pay.
_PARALLEL_BYTES = 2 ** 20
_PARALLEL_TOTAL = 2 ** 30


@dataclass(frozen=True)
class Digest:
    """A digest regzoo stores: its name in messages, its two metadata keys and its hash function (hex out)."""
    name: str
    key: str         # the digest of the whole file (over the group digests)
    groups_key: str  # JSON: group -> digest
    hexdigest: Callable[[bytes], str]


def _xxh3_128(data) -> str:
    import xxhash
    return xxhash.xxh3_128_hexdigest(data)


XXH3_128 = Digest('xxh3-128', 'regzoo_xxh3_128', 'regzoo_xxh3_128_groups', _xxh3_128)
SHA256 = Digest('sha256', 'regzoo_sha256', 'regzoo_sha256_groups', lambda data: hashlib.sha256(data).hexdigest())
WRITTEN = XXH3_128             # what regzoo writes now
DIGESTS = (XXH3_128, SHA256)   # what it verifies: the current digest, then the one of files written before
DIGEST_KEY, GROUPS_KEY = WRITTEN.key, WRITTEN.groups_key
FINITE_KEY = 'regzoo_all_finite'  # 'true' when every floating-point tensor was finite when written


def tensor_group(key: str) -> str:
    """The group a tensor's digest belongs to: its top-level module (after wrapper prefixes such as HF's)."""
    parts = key.split('.')
    n = 0
    while n < len(parts) - 1 and parts[n] in _WRAPPERS:
        n += 1
    return '.'.join(parts[:n + 1])


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _map(fn, items: list, sizes: list[int]) -> list:
    """``[fn(x) for x in items]``, the large ones in a thread pool when the whole is large."""
    big = [i for i, size in enumerate(sizes) if size >= _PARALLEL_BYTES]
    results = [None] * len(items)
    if len(big) > 1 and _workers() > 1 and sum(sizes) >= _PARALLEL_TOTAL:
        with ThreadPoolExecutor(_workers()) as pool:
            for i, r in zip(big, pool.map(fn, [items[i] for i in big])):
                results[i] = r
    for i, item in enumerate(items):
        if results[i] is None:
            results[i] = fn(item)
    return results


def _bytes(tensor: torch.Tensor):
    t = tensor.detach().cpu().contiguous()
    if not t.numel():
        return b''
    if t.dtype in _NUMPY_VIEWABLE:  # one call instead of four: 582 tensors of regnety_064 in 2 ms instead of 5
        return memoryview(t.numpy()).cast('B')
    return t.reshape(-1).view(torch.uint8).numpy().data


_NUMPY_VIEWABLE = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.int8,
                   torch.bool)


def tensor_digests(tensors: Mapping[str, torch.Tensor], digest: Digest = WRITTEN) -> dict[str, str]:
    """group -> ``digest`` hex over its tensors in sorted key order.

    Each tensor contributes a line ``name NUL dtype NUL shape NUL digest(bytes)``; in a checkpoint of a GiB or
    more the per-tensor hashes run in threads, so it is hashed on several cores.
    """
    names = sorted(tensors)
    datas = [_bytes(tensors[n]) for n in names]
    hashes = _map(digest.hexdigest, datas, [len(b) for b in datas])
    lines: dict[str, list[str]] = {}
    for name, hashed in zip(names, hashes):
        t = tensors[name]
        lines.setdefault(tensor_group(name), []).append(
            f'{name}\0{str(t.dtype).removeprefix("torch.")}\0{tuple(t.shape)}\0{hashed}\n')
    return {group: digest.hexdigest(''.join(text).encode()) for group, text in sorted(lines.items())}


def _total(groups: Mapping[str, str], digest: Digest) -> str:
    return digest.hexdigest(''.join(f'{g}\0{d}\n' for g, d in sorted(groups.items())).encode())


def digest_metadata(tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """The safetensors metadata entries that let a reader verify ``tensors`` (see ``failed_groups``), and
    ``FINITE_KEY`` when every floating-point tensor is finite (see ``finite_when_written``)."""
    groups = tensor_digests(tensors, WRITTEN)
    return {WRITTEN.key: _total(groups, WRITTEN), WRITTEN.groups_key: json.dumps(groups, separators=(',', ':')),
            **({} if nonfinite_names(tensors) else {FINITE_KEY: 'true'})}


def nonfinite_names(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or Inf (what the writer records and loading checks)."""
    # a sum is NaN/Inf whenever a summand is (and rarely by overflow): a fast filter before the exact test
    return [k for k, v in tensors.items() if v.is_floating_point() and v.numel()
            and not math.isfinite(v.sum().item()) and not bool(torch.isfinite(v).all())]


def finite_when_written(metadata: Mapping[str, str] | None) -> bool:
    """Whether a file's tensors were all finite when regzoo wrote it: its metadata records so beside a digest.

    Once the digests verify, the bytes are the ones written, so a loader need not look for NaN/Inf again (a
    full pass over the weights, as long as the hash itself: 12 ms of regnety_064's 123 MB); a NaN that appeared
    later changed the bytes and fails the digest. A file without a digest, or written with NaN/Inf, is checked.
    """
    metadata = metadata or {}
    return stored_digest(metadata) is not None and metadata.get(FINITE_KEY) == 'true'


def stored_digest(metadata: Mapping[str, str] | None) -> Digest | None:
    """The digest a file's metadata records (the current one, or sha256 in files regzoo wrote before); None: none."""
    metadata = metadata or {}
    return next((d for d in DIGESTS if d.key in metadata or d.groups_key in metadata), None)


def failed_groups(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None) -> list[str] | None:
    """Groups of ``tensors`` whose digest differs from the one ``metadata`` records; None when it records none.

    A damaged record of the digests themselves shows as ``['(the digest metadata)']``.
    """
    digest = stored_digest(metadata)
    if digest is None:
        return None
    try:
        saved = json.loads(metadata[digest.groups_key])
        if not isinstance(saved, dict) or _total(saved, digest) != metadata[digest.key]:
            raise ValueError
    except (KeyError, ValueError, TypeError, AttributeError):
        return ['(the digest metadata)']
    found = tensor_digests(tensors, digest)
    return [g for g in sorted(set(saved) | set(found)) if saved.get(g) != found.get(g)]


def bad_zip_record(path) -> str | None:
    """The first record of a zip file (torch.save's container) whose CRC-32 does not match; None if all do.

    ``zipfile.ZipFile.testzip``: it reads every record, checking its local header against the central
    directory and its CRC-32 (a record whose header is damaged counts as failing). Raises
    ``zipfile.BadZipFile`` (or OSError) when the archive itself cannot be read.
    """
    with zipfile.ZipFile(path) as z:
        return z.testzip()
