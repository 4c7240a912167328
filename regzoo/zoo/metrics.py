"""The published ImageNet-1k reference numbers per ``arch.tag`` (results/published.csv, sources kept).

The table lives in the repository's ``results/`` folder (regenerate it with
``results/build_published.py``); an installed package without the checkout falls back to the
``top1``/``top5``/``metrics_source`` of the weight's ``PretrainedCfg``.
"""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TABLE = Path(__file__).with_name('published.csv')


@dataclass(frozen=True)
class PublishedRef:
    """A published eval of one weight, and the settings it was measured with."""
    model: str
    top1: float | None
    top5: float | None
    img_size: int | None
    crop_pct: float | None
    interpolation: str | None
    source: str

    def settings_differ(self, img_size: int, crop_pct: float, interpolation: str) -> list[str]:
        """The eval settings that differ from the published run (each costs up to ~0.8 top-1)."""
        diffs = []
        if self.img_size is not None and self.img_size != img_size:
            diffs.append(f'img_size {img_size} vs published {self.img_size}')
        if self.crop_pct is not None and abs(self.crop_pct - crop_pct) > 1e-3:
            diffs.append(f'crop_pct {crop_pct:g} vs published {self.crop_pct:g}')
        if self.interpolation and self.interpolation != interpolation:
            diffs.append(f'{interpolation} vs published {self.interpolation}')
        return diffs


def _num(text: str, kind=float):
    return kind(float(text)) if text not in ('', None) else None


@functools.lru_cache(maxsize=4)
def load_published(path: str | Path = DEFAULT_TABLE) -> dict[str, PublishedRef]:
    """``arch.tag`` -> reference, read from a results/published.csv-style table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'published results table {path} does not exist')
    refs = {}
    with path.open(newline='') as f:
        for row in csv.DictReader(f):
            refs[row['model']] = PublishedRef(
                model=row['model'], top1=_num(row['top1']), top5=_num(row['top5']),
                img_size=_num(row['img_size'], int), crop_pct=_num(row['crop_pct']),
                interpolation=row['interpolation'] or None, source=row['source'])
    return refs


def lookup_published(name: str, path: str | Path | None = None, pretrained_cfg: Any = None) -> PublishedRef | None:
    """The reference for ``arch.tag`` (None for a bare arch or an unlisted tag)."""
    if '.' not in name:
        return None
    if path is not None or DEFAULT_TABLE.is_file():
        return load_published(Path(path or DEFAULT_TABLE)).get(name)
    if pretrained_cfg is not None and getattr(pretrained_cfg, 'top1', None) is not None:
        size = getattr(pretrained_cfg, 'test_input_size', None) or pretrained_cfg.input_size
        return PublishedRef(name, pretrained_cfg.top1, pretrained_cfg.top5, size[-1],
                            pretrained_cfg.test_crop_pct or pretrained_cfg.crop_pct, pretrained_cfg.interpolation,
                            pretrained_cfg.metrics_source or 'regzoo.pretrained')
    return None
