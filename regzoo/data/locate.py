"""Where a split's images live: an ImageFolder tree, WebDataset shards or an HF ``datasets`` folder.

The kind is read from the path (``locate_split``), the same way wherever a split is named:

- **shards**: a brace pattern (``val-{000000..000063}.tar``), a glob (``val-*.tar``), one ``.tar`` file, or a
  folder of ``.tar`` files (with ``<split>-*.tar`` names, the split's). Samples follow the webdataset
  convention: an image under ``jpg``/``jpeg``/``png``/``webp`` and an integer class under ``cls``. Class names come
  from ``classes.json`` beside the shards (``SHARD_CLASSES_FILE``: ``{"classes": [name of cls 0, ...]}`` or
  a plain JSON list; ``python -m regzoo.data.shards`` writes it with per-class counts); without it, ``cls``
  is the classifier index itself.
- **hf**: a folder written by ``datasets``' ``save_to_disk``: a ``Dataset``, or a ``DatasetDict`` whose split
  is chosen by name; ``image`` and ``label`` columns, a ``ClassLabel``'s names are the class names.
- **folder**: anything else that is a folder (``regzoo.data.datasets``' ImageFolder / flat val layouts).

``regzoo.data.sources`` opens a located split as a torch dataset.
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from regzoo.data.datasets import IMAGE_EXTENSIONS
from regzoo.utils.extras import require

SHARD_CLASSES_FILE = 'classes.json'
SPLIT_NAMES = ('train', 'val', 'validation', 'test')
EVAL_SPLITS = ('val', 'validation')  # what an evaluation takes when no split is named, as for folders
HF_DICT_FILE = 'dataset_dict.json'  # save_to_disk of a DatasetDict
HF_DATASET_FILES = ('state.json', 'dataset_info.json')  # save_to_disk of a Dataset
_PATTERN = re.compile(r'[*?\[]|\{[^{}]*(,|\.\.)[^{}]*\}')  # a glob character or a brace expansion


@dataclass(frozen=True)
class SplitLocation:
    """A located split: its kind, the folder (folder / hf) or shard files (shards), and the split chosen."""
    kind: str                       # 'folder' | 'shards' | 'hf'
    path: Path                      # the ImageFolder split, the HF folder, or the shards' folder
    shards: tuple[str, ...] = ()    # shards: every file, in order
    split: str | None = None        # hf: the DatasetDict split (None for a plain Dataset)

    def describe(self) -> str:
        if self.kind == 'shards':
            return f'{len(self.shards)} WebDataset shard(s) in {self.path}'
        if self.kind == 'hf':
            return f'HF dataset {self.path}' + (f' (split {self.split!r})' if self.split else '')
        return f'image folder {self.path}'


def is_shard_pattern(data: str) -> bool:
    """A brace pattern or a glob (rather than one path)."""
    return bool(_PATTERN.search(data))


def _expand_pattern(data: str) -> list[str]:
    require_webdataset()
    from webdataset.shardlists import expand_urls  # webdataset's own brace expansion (braceexpand)

    named = expand_urls(data)
    files = []
    for name in named:
        files += sorted(glob.glob(name)) if any(c in name for c in '*?[') else [name] if os.path.isfile(name) else []
    if not files:
        raise FileNotFoundError(f'{data} matches no file; check the pattern (e.g. DIR/val-{{000000..000063}}.tar)')
    missing = [n for n in named if not any(c in n for c in '*?[') and not os.path.isfile(n)]
    if missing:
        raise FileNotFoundError(f'{len(missing)} of the {len(named)} shards named by {data} do not exist, '
                                f'e.g. {missing[0]}; fix the range')
    return files


def _split_of(name: str) -> str | None:
    """The split a shard's file name starts with (``val-000001.tar`` -> 'val'), if any."""
    head = re.split(r'[-_.]', name, maxsplit=1)[0]
    return head if head in SPLIT_NAMES else None


def names_split(where: SplitLocation, split: str) -> bool:
    """Whether a located HF dataset or set of shards is ``split`` by name (a DatasetDict's split, shard files
    ``<split>-*.tar``, or a folder called ``split``), not data that any split name would find."""
    if where.kind == 'hf':
        return where.split == split or (where.split is None and where.path.name == split)
    if where.kind == 'shards':
        return where.path.name == split or all(_split_of(Path(s).name) == split for s in where.shards)
    return True


def _shards_in_folder(folder: Path, split: str | None) -> list[str]:
    tars = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix == '.tar'), key=lambda p: p.name)
    by_split: dict[str | None, list[str]] = {}
    for p in tars:
        by_split.setdefault(_split_of(p.name), []).append(str(p))
    named = sorted(k for k in by_split if k)
    wanted = (split,) if split else EVAL_SPLITS
    for name in wanted:
        if name in by_split:
            return by_split[name]
    if not named:
        return [str(p) for p in tars]  # one split's shards, unprefixed
    raise ValueError(f'{folder} holds shards of split(s) {named} but none of {split or "val/validation"!r}; '
                     'name the split (--split / --val-split / --train-split)')


def _hf_split(folder: Path, split: str | None) -> str:
    splits = json.loads((folder / HF_DICT_FILE).read_text()).get('splits', [])
    wanted = (split,) if split else EVAL_SPLITS
    for name in wanted:
        if name in splits:
            return name
    raise ValueError(f'HF DatasetDict {folder} has no split {split or "val/validation"!r} (splits: {splits}); '
                     'choose one with --split (validate.py) or --train-split/--val-split (train.py)')


def locate_split(data: str | os.PathLike, split: str | None = None) -> SplitLocation:
    """Find the split ``split`` (None: an evaluation's default, val/validation, or the path itself) of ``data``.

    ``data``: an ImageFolder tree or split folder, an HF ``save_to_disk`` folder, or WebDataset shards (a brace
    pattern, a glob, a ``.tar`` file, a folder of ``.tar`` files). Raises FileNotFoundError / ValueError with a
    one-line message for a path that is none of these, a pattern matching nothing, or a missing split.
    """
    text = str(data)
    if is_shard_pattern(text) and not os.path.exists(text):
        files = _expand_pattern(text)
        return SplitLocation('shards', Path(files[0]).parent, tuple(files), split)
    path = Path(text)
    if path.is_file():
        if path.suffix == '.tar':
            return SplitLocation('shards', path.parent, (str(path),), split)
        raise ValueError(f'{path} is a file, not a dataset: give an image folder, WebDataset shards '
                         '(.tar files or a pattern) or an HF save_to_disk folder')
    if not path.is_dir():
        raise FileNotFoundError(f'{path} does not exist; give an image folder, WebDataset shards '
                                '(a .tar pattern such as val-{000000..000063}.tar) or an HF save_to_disk folder')
    return _locate_in_folder(path, split, in_split_folder=False)


def _locate_in_folder(path: Path, split: str | None, in_split_folder: bool) -> SplitLocation:
    """``locate_split`` for a folder; ``in_split_folder``: ``path`` is already the split's own folder."""
    if (path / HF_DICT_FILE).is_file():
        return SplitLocation('hf', path, split=_hf_split(path, split))
    if all((path / f).is_file() for f in HF_DATASET_FILES):
        return SplitLocation('hf', path)
    if not in_split_folder and split and (path / split).is_dir():
        return _locate_in_folder(path / split, split, in_split_folder=True)
    if any(p.suffix == '.tar' for p in path.iterdir() if p.is_file()):
        tars = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix == '.tar')
        return SplitLocation('shards', path, tuple(tars if in_split_folder else _shards_in_folder(path, split)), split)
    if in_split_folder:
        return SplitLocation('folder', path)
    if not split:
        for name in EVAL_SPLITS:  # an ImageNet-style root, or a folder of train/ and val/ shard folders
            sub = path / name
            if sub.is_dir() and not any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir()):
                return _locate_in_folder(sub, name, in_split_folder=True)
        return SplitLocation('folder', path)  # no images there: the folder reader says so
    present = sorted(p.name for p in path.iterdir() if p.is_dir())
    raise FileNotFoundError(f'split {split!r} not found in {path}: no folder {path / split}, no '
                            f'{split}-*.tar shards, no HF DatasetDict (it holds {present or "no folders"})')


def read_shard_classes(folder: Path) -> tuple[list[str] | None, dict]:
    """(class names in ``cls`` order, or None; the whole JSON) from ``folder/classes.json`` when it exists."""
    path = folder / SHARD_CLASSES_FILE
    if not path.is_file():
        return None, {}
    info = json.loads(path.read_text())
    names = info if isinstance(info, list) else info.get('classes') if isinstance(info, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f'{path}: expected {{"classes": [class name, ...]}} or a JSON list of class names')
    return names, info if isinstance(info, dict) else {'classes': names}


def require_datasets():
    return require('datasets', 'data', 'reading an HF datasets folder')


def require_webdataset():
    return require('webdataset', 'data', 'reading or writing WebDataset shards')
