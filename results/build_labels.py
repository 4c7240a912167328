"""Regenerate regzoo/data/imagenet-1k.tsv, the ImageNet-1k class ids and names regzoo ships, from timm's ImageNet info.

    python results/build_labels.py [OUT]      (default: regzoo/data/imagenet-1k.tsv)

The source is timm's maintained copy of the ImageNet synset files (``timm/data/_info``: the sorted
1000 WordNet ids and the WordNet lemma and definition of each), read through ``timm.data.ImageNetInfo``
so its parsing is the reference. One header line, then one line per class in classifier index order:
``wnid<TAB>lemma<TAB>definition``. ``regzoo.data.labels`` reads the file without importing timm;
tests/test_predict.py checks that it still equals timm's info.
"""
from __future__ import annotations

import sys
from pathlib import Path

HEADER = ('wnid', 'lemma', 'definition')
DEFAULT_OUT = Path(__file__).resolve().parents[1] / 'regzoo' / 'data' / 'imagenet-1k.tsv'


def build() -> str:
    from timm.data import ImageNetInfo
    info = ImageNetInfo('imagenet-1k')
    lines = ['\t'.join(HEADER)]
    for wnid in info.label_names():
        lemma = info.label_name_to_description(wnid)
        definition = info.label_name_to_description(wnid, detailed=True)[len(lemma) + 2:]
        fields = (wnid, lemma, definition)
        if any('\t' in f or '\n' in f for f in fields):
            raise ValueError(f'{wnid}: a field holds a tab or newline; the TSV cannot carry it: {fields}')
        lines.append('\t'.join(fields))
    return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT_OUT
    text = build()
    out.write_text(text, encoding='utf-8')
    print(f'wrote {out} ({len(text.splitlines()) - 1} classes)')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
