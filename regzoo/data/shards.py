"""``python -m regzoo.data.shards SRC DST``: an ImageFolder tree (or an HF ``save_to_disk`` folder) as WebDataset
shards, shuffled, with ``classes.json`` beside them (``regzoo.data.shard_writer.write_shards`` does the work)."""
from __future__ import annotations

import sys

from regzoo.data.shard_writer import DEFAULT_SHARD_BYTES, DEFAULT_SHARD_IMAGES, write_shards
from regzoo.utils.runtime import ArgumentParser, run_cli

PROG = 'python -m regzoo.data.shards'


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=(
        'Write an ImageFolder tree (SRC/train/<class>/*, SRC/val/<class>/*, or one split folder) or an HF '
        'save_to_disk folder as shuffled WebDataset shards DST/<split>-NNNNNN.tar, with DST/classes.json '
        '(class names in cls order, image counts per split and class).'))
    p.add_argument('src', metavar='SRC', help='ImageFolder tree or split folder, or HF datasets folder')
    p.add_argument('dst', metavar='DST', help='output folder (new or empty)')
    p.add_argument('--shard-size', '--maxcount', dest='shard_size', type=int, default=DEFAULT_SHARD_IMAGES,
                   metavar='N', help='images per shard (default: %(default)s)')
    p.add_argument('--max-bytes', type=float, default=DEFAULT_SHARD_BYTES, metavar='B',
                   help='bytes per shard at most (default: %(default).0e)')
    p.add_argument('--split', default=None, metavar='NAME',
                   help='write only this split (default: every split; a single split folder: its own name)')
    p.add_argument('--seed', type=int, default=0, help='seed of the order images are written in')
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(_write, PROG, argv)


def _write(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    summary = write_shards(args.src, args.dst, max_images=args.shard_size, max_bytes=args.max_bytes,
                           seed=args.seed, split=args.split)
    for split, files in summary.shards.items():
        print(f'{split}: {len(files)} shard(s) {files[0].name} .. {files[-1].name}')
    print(f'wrote {summary.classes_file}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
