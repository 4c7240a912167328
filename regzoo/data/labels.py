"""Class labels of the label sets regzoo's weights use: ids (WordNet synsets) and human-readable descriptions.

ImageNet-1k ships with regzoo (``regzoo/data/imagenet-1k.tsv``: wnid, WordNet lemma and definition per class, in
classifier index order), generated from timm's maintained ImageNet info by ``results/build_labels.py`` and read
here without importing timm. The larger sets (12k, 22k) are read from timm when asked for.
"""
from __future__ import annotations

import functools
from importlib import resources

LABEL_SETS = ('imagenet-1k', 'imagenet-12k', 'imagenet-22k')
PACKAGED = {'imagenet-1k': 'imagenet-1k.tsv'}  # label set -> file in this package


def _check(label_set: str) -> None:
    if label_set not in LABEL_SETS:
        raise ValueError(f'unknown label set {label_set!r}; known: {", ".join(LABEL_SETS)}')


@functools.lru_cache(maxsize=None)
def _packaged(label_set: str) -> tuple[tuple[str, str, str], ...]:
    """(wnid, lemma, definition) per class of a packaged label set."""
    text = resources.files(__package__).joinpath(PACKAGED[label_set]).read_text(encoding='utf-8')
    rows = tuple(tuple(line.split('\t')) for line in text.splitlines()[1:] if line)  # line 1 is the header
    bad = [r for r in rows if len(r) != 3]
    if bad:
        raise ValueError(f'regzoo/data/{PACKAGED[label_set]}: {len(bad)} line(s) without 3 tab-separated fields, '
                         f'e.g. {bad[0]!r}; regenerate it with results/build_labels.py')
    return rows


@functools.lru_cache(maxsize=None)
def _timm_info(label_set: str):
    from timm.data import ImageNetInfo
    return ImageNetInfo(label_set)


def label_names(label_set: str) -> tuple[str, ...]:
    """The class ids of a label set in classifier index order ('imagenet-1k' -> 1000 sorted wnids)."""
    _check(label_set)
    if label_set in PACKAGED:
        return tuple(row[0] for row in _packaged(label_set))
    return tuple(_timm_info(label_set).label_names())


def label_descriptions(label_set: str, detailed: bool = False) -> tuple[str, ...]:
    """Human-readable class names in classifier index order ('tench, Tinca tinca', ...).

    ``detailed`` appends the WordNet definition: 'tench, Tinca tinca: freshwater dace-like game fish ...'.
    """
    _check(label_set)
    if label_set in PACKAGED:
        return tuple(f'{lemma}: {definition}' if detailed else lemma for _, lemma, definition in _packaged(label_set))
    info = _timm_info(label_set)
    return tuple(info.label_descriptions(detailed=detailed))
