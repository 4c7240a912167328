"""The published ImageNet-1k reference numbers per ``arch.tag``: the one packaged metrics table.

``regzoo/zoo/published.csv`` ships inside the package (read through ``importlib.resources``, so a
non-editable install has it too) and is the only copy of these numbers: the weight table fills each
``PretrainedCfg``'s ``top1``/``top5``/``metrics_source`` from it, and validate.py and the results
tables look them up here. Regenerate it from the sourced reference table with
``results/build_published.py``.
"""
from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


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


def _parse(text: str) -> dict[str, PublishedRef]:
    refs = {}
    for row in csv.DictReader(io.StringIO(text)):
        refs[row['model']] = PublishedRef(
            model=row['model'], top1=_num(row['top1']), top5=_num(row['top5']),
            img_size=_num(row['img_size'], int), crop_pct=_num(row['crop_pct']),
            interpolation=row['interpolation'] or None, source=row['source'])
    return refs


@functools.lru_cache(maxsize=4)
def load_published(path: str | Path | None = None) -> dict[str, PublishedRef]:
    """``arch.tag`` -> reference: the packaged table, or a table of the same columns at ``path``."""
    if path is None:
        return _parse(resources.files(__package__).joinpath('published.csv').read_text(encoding='utf-8'))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'published results table {path} does not exist; pass an existing CSV '
                                'or leave it out to use the packaged regzoo/zoo/published.csv')
    return _parse(path.read_text(encoding='utf-8'))


def lookup_published(name: str, path: str | Path | None = None) -> PublishedRef | None:
    """The reference for ``arch.tag`` (None for a bare arch or an unlisted tag)."""
    return load_published(path).get(name) if '.' in name else None
