"""Class labels of the label sets regzoo's weights use: ids (WordNet synsets) and human-readable descriptions."""
from __future__ import annotations

LABEL_SETS = ('imagenet-1k', 'imagenet-12k', 'imagenet-22k')


def _info(label_set: str):
    from timm.data import ImageNetInfo

    if label_set not in LABEL_SETS:
        raise ValueError(f'unknown label set {label_set!r}; known: {", ".join(LABEL_SETS)}')
    return ImageNetInfo(label_set)


def label_names(label_set: str) -> tuple[str, ...]:
    """The class ids of a label set in classifier index order ('imagenet-1k' -> 1000 sorted wnids)."""
    return tuple(_info(label_set).label_names())


def label_descriptions(label_set: str, detailed: bool = False) -> tuple[str, ...]:
    """Human-readable class names in classifier index order ('tench, Tinca tinca', ...)."""
    info = _info(label_set)
    return tuple(info.index_to_description(i, detailed=detailed) for i in range(info.num_classes()))
