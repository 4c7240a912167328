"""Write an ImageFolder tree or an HF ``datasets`` folder as WebDataset shards (``webdataset.ShardWriter``).

Per split, ``DST/<split>-000000.tar, ...``: the samples in a seeded random order (streaming readers then need
only a small shuffle buffer), each the image's original bytes under its format's extension (``jpg``, ``png``,
``webp``; other formats are re-encoded as PNG) and the class index under ``cls``, with ``DST/classes.json``
(``SHARD_CLASSES_FILE``) beside them: the class names in ``cls`` order, per-split image counts and per-class counts,
and the shard file names. Shards are written into a hidden folder in DST and moved in at the end: an interrupted
run leaves no shard behind.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from regzoo.data.datasets import IMAGE_EXTENSIONS, scan_image_folder
from regzoo.data.locate import HF_DATASET_FILES, HF_DICT_FILE, SHARD_CLASSES_FILE, SPLIT_NAMES, SplitLocation
from regzoo.data.locate import require_webdataset
from regzoo.utils.names import natural_key

DEFAULT_SHARD_IMAGES = 1000  # ImageNet-1k val: 50 shards of ~6.4 MB x 1000 JPEGs
DEFAULT_SHARD_BYTES = 1e9
_FORMAT_KEYS = {'JPEG': 'jpg', 'PNG': 'png', 'WEBP': 'webp'}


@dataclass(frozen=True)
class ShardSummary:
    """What ``write_shards`` wrote: the shard files per split and the classes.json it wrote."""
    shards: dict[str, list[Path]]
    classes_file: Path


def _image_entry(data: bytes, name: str) -> tuple[str, bytes]:
    """(webdataset extension, bytes): the original bytes when webdataset readers take the format, else PNG."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            key = _FORMAT_KEYS.get(img.format or '')
            if key:
                return key, data
            out = io.BytesIO()
            img.convert('RGBA' if 'A' in img.getbands() else 'RGB').save(out, format='PNG')
            return 'png', out.getvalue()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f'cannot read image {name} ({type(err).__name__}: {err}); remove it before writing '
                         'shards') from None


def _folder_splits(src: Path, split: str | None) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """(class names, split -> [(image path, class name)]) of an ImageFolder tree or of one split folder."""
    present = [s for s in SPLIT_NAMES if (src / s).is_dir()]
    if split:
        roots = {split: src / split if (src / split).is_dir() else src}
    else:
        roots = {s: src / s for s in present} if present else {src.name: src}
    by_split = {name: scan_image_folder(root) for name, root in roots.items()}
    classes = sorted({c for folders in by_split.values() for c in folders}, key=natural_key)
    samples = {name: [(p, c) for c, paths in folders.items() for p in paths] for name, folders in by_split.items()}
    empty = [name for name, items in samples.items() if not items]
    if empty:
        raise ValueError(f'no images ({", ".join(sorted(IMAGE_EXTENSIONS))}) in class folders of split(s) {empty} '
                         f'under {src}')
    return classes, samples


def _hf_splits(src: Path, split: str | None):
    from regzoo.data.hf_source import load_hf_split, row_image

    if (src / HF_DICT_FILE).is_file():
        names = json.loads((src / HF_DICT_FILE).read_text()).get('splits', [])
        chosen = [split] if split else names
        tables = {s: load_hf_split(SplitLocation('hf', src, split=s)) for s in chosen}
    else:
        tables = {split or src.name: load_hf_split(SplitLocation('hf', src))}
    class_lists = {tuple(names) if names is not None else None for _, names in tables.values()}
    if len(class_lists) != 1 or None in class_lists:
        raise ValueError(f'{src}: the splits need one ClassLabel "label" column with the same names')
    classes = list(class_lists.pop())

    def fetch(table):
        def record(i: int) -> tuple[bytes, str, str]:
            row = table[i]
            image = row_image(row)
            data = image.getvalue() if isinstance(image, io.BytesIO) else Path(image).read_bytes()
            return data, classes[int(row['label'])], row['image'].get('path') or f'{src}[{i}]'
        return record
    return classes, {s: (len(t), fetch(t)) for s, (t, _) in tables.items()}


def _folder_record(items: list[tuple[str, str]]):
    def record(i: int) -> tuple[bytes, str, str]:
        path, class_name = items[i]
        return Path(path).read_bytes(), class_name, path
    return record


def write_shards(src: str | os.PathLike, dst: str | os.PathLike, *, max_images: int = DEFAULT_SHARD_IMAGES,
                 max_bytes: float = DEFAULT_SHARD_BYTES, seed: int = 0, split: str | None = None) -> ShardSummary:
    """Write ``src`` (an ImageFolder tree with train/ val/ ..., one split folder, or an HF ``save_to_disk``
    folder) as shuffled WebDataset shards of at most ``max_images`` images / ``max_bytes`` bytes into ``dst``.

    ``split``: write only this split (a DatasetDict's, or the name a single split folder's shards get; default:
    every split found, or the folder's own name). The order of a split is a permutation seeded by ``seed`` and
    the split's name.
    """
    wds = require_webdataset()
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f'{src} does not exist or is not a folder')
    if max_images < 1 or max_bytes < 1:
        raise ValueError('the shard size (images and bytes) must be >= 1')
    if dst.is_dir() and any(p.suffix == '.tar' or p.name == SHARD_CLASSES_FILE for p in dst.iterdir()):
        raise ValueError(f'{dst} already holds shards or {SHARD_CLASSES_FILE}; choose an empty or new folder')
    if (src / HF_DICT_FILE).is_file() or all((src / f).is_file() for f in HF_DATASET_FILES):
        classes, streams = _hf_splits(src, split)
    else:
        classes, samples = _folder_splits(src, split)
        streams = {s: (len(items), _folder_record(items)) for s, items in samples.items()}
    index = {name: i for i, name in enumerate(classes)}
    dst.mkdir(parents=True, exist_ok=True)
    tmp = dst / f'.partial-{os.getpid()}'
    tmp.mkdir()
    try:
        counts, written = {}, {}
        for name, (n, record) in sorted(streams.items()):
            # a split's order depends on (seed, split name) only; images are read one by one in this order
            order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(n)
            counts[name] = Counter()
            with wds.ShardWriter(str(tmp / f'{name}-%06d.tar'), maxcount=max_images, maxsize=max_bytes,
                                 verbose=0) as sink:
                for position, j in enumerate(order):
                    data, class_name, origin = record(int(j))
                    key, payload = _image_entry(data, origin)
                    sink.write({'__key__': f'{name}_{position:08d}', key: payload, 'cls': index[class_name]})
                    counts[name][class_name] += 1
            written[name] = sorted(tmp.glob(f'{name}-*.tar'))
        info = {'classes': classes, 'num_images': {s: sum(c.values()) for s, c in counts.items()},
                'counts': {s: {c: counts[s][c] for c in classes} for s in counts}, 'seed': seed,
                'shards': {s: [p.name for p in files] for s, files in written.items()}}
        (tmp / SHARD_CLASSES_FILE).write_text(json.dumps(info, indent=1) + '\n')
        for p in tmp.iterdir():
            os.replace(p, dst / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ShardSummary({s: [dst / p.name for p in files] for s, files in written.items()}, dst / SHARD_CLASSES_FILE)
