"""Sharded checkpoints as HF writes them: an index JSON whose ``weight_map`` names the shard file of each tensor.

Two index forms exist: ``model.safetensors.index.json`` over ``model-0000k-of-0000n.safetensors`` (what
``save_pretrained`` writes above ``max_shard_size``, as transformers does) and ``pytorch_model.bin.index.json``
over ``pytorch_model-0000k-of-0000n.bin`` (older HF repos, the 10B SEER ones among them).

Reading never holds the weights twice. ``meta_tensors`` gives every tensor's name, shape and dtype from the
shard headers alone, as meta tensors, so the model is sized and checked against them before any data is
read; ``read_shards`` then reads the data one shard at a time (through the one reader of weights files,
``regzoo.zoo.reading.read_verified``, which the caller passes), and ``regzoo.zoo.applying.load_tensors``
assigns it into a model built on the meta device (the tensors read become the parameters, no copy).
Peak memory is about the weights plus one tensor (safetensors shards, copied out of the file tensor by tensor)
or one shard (``torch.load`` reads a whole ``.bin`` shard). This module knows index files and shard headers
only: ``regzoo.zoo.applying`` converts the keys, fits and checks the tensors, and re-raises ``ShardError`` as
its ``CheckpointError``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from regzoo.utils.checksum import digest_metadata
from regzoo.utils.files import atomic_write
from regzoo.utils.names import few
from regzoo.zoo.layout import SAFETENSORS_FILE, SAFETENSORS_INDEX

SHARD_PATTERN = 'model{suffix}.safetensors'  # huggingface_hub's, giving model-00001-of-00003.safetensors
_SHARD_NAME = re.compile(r'model-\d{5}-of-\d{5}\.safetensors')
DEFAULT_MAX_SHARD_SIZE = '5GB'  # transformers' and huggingface_hub's default
# size units as transformers reads max_shard_size: decimal KB..TB, binary KiB..TiB
_UNITS = {'B': 1, 'KB': 10 ** 3, 'MB': 10 ** 6, 'GB': 10 ** 9, 'TB': 10 ** 12,
          'KIB': 2 ** 10, 'MIB': 2 ** 20, 'GIB': 2 ** 30, 'TIB': 2 ** 40}
_SAFETENSORS_DTYPES = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8,
    'BOOL': torch.bool, 'F8_E4M3': torch.float8_e4m3fn, 'F8_E5M2': torch.float8_e5m2}


class ShardError(ValueError):
    """A sharded checkpoint that cannot be read; ``path`` is the file at fault. ``cause`` is set when that file
    itself does not read (the caller then says what it looks like)."""

    def __init__(self, message: str, path: str | Path, cause: BaseException | None = None):
        super().__init__(message)
        self.path, self.cause = Path(path), cause


def is_index(path: str | Path) -> bool:
    """Whether ``path`` names a sharded-weights index (``*.index.json``)."""
    return Path(path).name.endswith('.index.json')


@dataclass(frozen=True)
class ShardIndex:
    """An index file and its ``weight_map`` (tensor name -> shard file name beside the index)."""
    path: Path
    weight_map: Mapping[str, str]

    @property
    def shards(self) -> tuple[Path, ...]:
        """The shard files, in name order (the order HF numbers them)."""
        return tuple(self.path.parent / name for name in sorted(set(self.weight_map.values())))

    def names_in(self, shard: Path) -> set[str]:
        return {name for name, file in self.weight_map.items() if file == shard.name}


def parse_index(path: str | Path) -> ShardIndex:
    """The index at ``path``, its shards not looked for; a malformed index raises ``ShardError`` naming it."""
    path = Path(path)
    try:
        weight_map = json.loads(path.read_text())['weight_map']
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError('"weight_map" must be a non-empty JSON object')
        shards = sorted(set(weight_map.values()))
        if not all(isinstance(s, str) and s and Path(s).name == s for s in shards):
            raise ValueError(f'shard names must be file names beside the index, got {few(map(repr, shards), 5)}')
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ShardError(f'{path}: not a readable sharded-weights index ({type(e).__name__}: {e}); expected JSON '
                         'with a "weight_map" of tensor name -> shard file', path, cause=e) from e
    return ShardIndex(path, MappingProxyType(dict(weight_map)))


def read_index(path: str | Path) -> ShardIndex:
    """The index at ``path``; a malformed index or a missing shard raises ``ShardError`` naming the file."""
    index = parse_index(path)
    for shard in index.shards:
        if not shard.is_file():
            raise ShardError(f'{index.path}: its shard {shard.name} is missing from {index.path.parent} (an '
                             'interrupted download, copy or save?): fetch or save the checkpoint again', shard)
    return index


def _header(shard: Path) -> dict[str, torch.Tensor]:
    """A shard's tensors as meta tensors, from its header (safetensors) or its pickle (torch), reading no data."""
    try:
        if shard.suffix == '.safetensors':
            from safetensors import safe_open
            with safe_open(str(shard), 'pt') as f:
                slices = {name: f.get_slice(name) for name in f.keys()}
                return {name: torch.empty(s.get_shape(), dtype=_SAFETENSORS_DTYPES[s.get_dtype()], device='meta')
                        for name, s in slices.items()}
        obj = torch.load(shard, map_location='meta', weights_only=True)
    except Exception as e:  # safetensors' own errors, unpickling errors, a dtype we have no name for (KeyError)...
        detail = (str(e).strip().splitlines() or [''])[0][:160]
        raise ShardError(f'{shard}: not a readable shard ({type(e).__name__}: {detail}): it may be truncated or '
                         'corrupt; fetch or save the checkpoint again', shard, cause=e) from e
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ShardError(f'{shard}: a shard must hold tensors by name, not a {type(obj).__name__} of other things',
                         shard)
    return dict(obj)


def meta_tensors(index: ShardIndex) -> dict[str, torch.Tensor]:
    """Every tensor of the sharded checkpoint as a meta tensor (its shape and dtype, no data), shard by shard.

    Each shard must hold exactly the tensors the index maps to it.
    """
    found = {}
    for shard in index.shards:
        header = _header(shard)
        listed = index.names_in(shard)
        if set(header) != listed:
            extra, missing = set(header) - listed, listed - set(header)
            raise ShardError(f'{shard}: does not match its index {index.path.name}: '
                             + '; '.join(([f'holds {len(extra)} tensor(s) the index does not list: {few(sorted(extra), 5)}']
                                          if extra else [])
                                         + ([f'lacks {len(missing)} the index lists: {few(sorted(missing), 5)}']
                                            if missing else [])), shard)
        found.update(header)
    return found


def read_shards(index: ShardIndex, expected: Mapping[str, torch.Tensor],
                read: Callable[[Path], Mapping]) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    """(shard, its tensors) for each shard in turn, each shard read by ``read`` (the one reader of weights files,
    ``regzoo.zoo.reading.read_verified``: its tensors own their memory, so a parameter may be one, and its bytes
    are verified). ``expected`` are ``meta_tensors(index)``: the tensors read must be those, with those shapes
    and dtypes.
    """
    for shard in index.shards:
        tensors = read(shard)
        changed = [name for name in set(tensors) | index.names_in(shard) if name not in expected
                   or not isinstance(tensors.get(name), torch.Tensor) or tensors[name].shape != expected[name].shape
                   or tensors[name].dtype != expected[name].dtype]
        if changed:
            raise ShardError(f'{shard}: tensors {few(sorted(changed), 5)} differ from its header read before (the file changed '
                             'while it was loaded?)', shard)
        yield shard, dict(tensors)
        del tensors  # not held while the next shard is read


def parse_size(value: int | str) -> int:
    """Bytes from ``max_shard_size``: an int, or a size as transformers reads it ('500MB', '5GB', '1.5GiB')."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value > 0:
            return value
    elif isinstance(value, str) and (m := re.fullmatch(r'\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]+)\s*', value)):
        unit = _UNITS.get(m[2].upper())
        if unit is not None and float(m[1]) * unit >= 1:
            return int(float(m[1]) * unit)
    raise ValueError(f"max_shard_size={value!r} is invalid: give bytes as an int > 0 or a size such as '500MB' or "
                     "'5GB' (KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024)")


def write_weights(out: Path, tensors: Mapping[str, torch.Tensor],
                  max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> tuple[str, ...]:
    """Write ``tensors`` into the folder ``out`` as HF does; returns the names of the weights files written.

    One ``model.safetensors`` when they fit in ``max_shard_size`` (``parse_size``), else
    ``model-0000k-of-0000n.safetensors`` shards and ``model.safetensors.index.json`` (huggingface_hub's split: in
    key order, a tensor larger than the limit alone in its shard). Every file carries the integrity digests of its
    own tensors (``regzoo.utils.checksum``: xxh3-128) and is written atomically, the index last; weights files of an
    earlier save that this one does not use are removed afterwards, so a reader never picks a stale one.
    """
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file
    split = split_torch_state_dict_into_shards(dict(tensors), filename_pattern=SHARD_PATTERN,
                                               max_shard_size=parse_size(max_shard_size))
    written = []
    for name, names in split.filename_to_tensors.items():
        part = {k: tensors[k] for k in names}
        metadata = {'format': 'pt', **digest_metadata(part)}
        atomic_write(out / name, lambda tmp: save_file(part, tmp, metadata=metadata))
        written.append(name)
    if split.is_sharded:
        index = {'metadata': dict(split.metadata), 'weight_map': dict(split.tensor_to_filename)}
        atomic_write(out / SAFETENSORS_INDEX, lambda tmp: tmp.write_text(json.dumps(index, indent=2) + '\n'))
        written.append(SAFETENSORS_INDEX)
    for path in out.iterdir():
        ours = path.name in (SAFETENSORS_FILE, SAFETENSORS_INDEX) or _SHARD_NAME.fullmatch(path.name)
        if ours and path.name not in written:
            path.unlink()
    return tuple(written)
