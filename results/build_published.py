"""Regenerate regzoo/zoo/published.csv, the packaged metrics table, from the sourced reference table.

    python results/build_published.py [results/reference/published.csv]

The output has one row per arch.tag and is the only copy of the published numbers the package uses:
the weight table (``regzoo.zoo.pretrained``), validate.py and the results tables all read it through
``regzoo.zoo.metrics``. The input, with every source per weight, stays in results/reference/ and is
what tests/test_pretrained.py checks the packaged numbers against.

Reference choice: the timm results-imagenet.csv row measured at timm's default *test* cfg for the
weight (test_input_size, test_crop_pct or crop_pct) -- that is the eval transform regzoo's
validate.py uses by default, so the gap it reports is a pipeline check, not a recipe difference.
Weights timm does not evaluate (torchvision V1 ``tv_in1k``) use torchvision's own number. The
weight authors' own eval (pycls, torchvision, SWAG, vissl), which uses a different resize, is kept
in the ``author_*`` columns; SOURCES.md next to the input explains every source and disagreement.
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import timm
from timm.utils import natural_key

COLUMNS = ('model', 'img_size', 'crop_pct', 'interpolation', 'top1', 'top5', 'param_count', 'source',
           'author_top1', 'author_top5', 'author_img_size', 'author_crop_pct', 'author_interpolation',
           'author_source', 'notes')
AUTHOR_SOURCES = ('pycls@', 'torchvision', 'facebookresearch/SWAG', 'facebookresearch/vissl')


def _timm_test_cfg(name: str) -> tuple[int, float] | None:
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 -- a tag timm does not ship (tv_in1k)
        return None
    if cfg is None:
        return None
    size = (cfg.test_input_size or cfg.input_size)[-1]
    return size, float(cfg.test_crop_pct or cfg.crop_pct)


def _pick(rows: list[dict], prefixes: tuple[str, ...]) -> list[dict]:
    return [r for r in rows if r['source'].startswith(prefixes) and r['top1']]


def build(reference: Path) -> list[dict]:
    by_weight = defaultdict(list)
    for row in csv.DictReader(reference.open()):
        by_weight[f"{row['model']}.{row['tag']}"].append(row)
    out = []
    for name, rows in sorted(by_weight.items(), key=lambda kv: natural_key(kv[0])):
        test_cfg = _timm_test_cfg(name)
        timm_rows = [r for r in _pick(rows, ('timm@4e5207c7',))
                     if test_cfg is None or (int(r['img_size']), float(r['crop_pct'])) == test_cfg]
        author = next(iter(_pick(rows, ('pycls@',)) or _pick(rows, ('torchvision',))
                           or _pick(rows, AUTHOR_SOURCES[2:])), None)
        ref = timm_rows[0] if timm_rows else author
        row = dict.fromkeys(COLUMNS, '')
        row['model'] = name
        if ref is None:  # pretrain-only weights: no ImageNet-1k head to evaluate
            meta = rows[0]
            row.update(img_size=meta['img_size'], crop_pct=meta['crop_pct'], interpolation=meta['interpolation'],
                       source=meta['source'], notes='no ImageNet-1k eval published (pretrain-only weights)')
            out.append(row)
            continue
        row.update(img_size=ref['img_size'], crop_pct=f"{float(ref['crop_pct']):g}", interpolation=ref['interpolation'],
                   top1=ref['top1'], top5=ref['top5'],
                   param_count=f"{float(ref['params_m']):.2f}" if ref['params_m'] else '',
                   source=ref['source'])
        if author is not None and author is not ref:
            row.update(author_top1=author['top1'], author_top5=author['top5'], author_img_size=author['img_size'],
                       author_crop_pct=author['crop_pct'] and f"{float(author['crop_pct']):g}",
                       author_interpolation=author['interpolation'], author_source=author['source'])
        if ref is author:
            row['notes'] = 'timm ships no such tag; reference is the weight authors\' own eval'
        out.append(row)
    return out


def main() -> None:
    reference = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / 'reference' / 'published.csv')
    target = Path(__file__).resolve().parents[1] / 'regzoo' / 'zoo' / 'published.csv'
    rows = build(reference)
    with target.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)
    print(f'wrote {len(rows)} weights to {target}')


if __name__ == '__main__':
    main()
