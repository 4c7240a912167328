"""Regenerate the results tables: ``python -m regzoo.tables [--out-dir results]``.

Writes ``models.csv``, ``models.md`` and ``accuracy_vs_gflops.png`` (``regzoo.analysis.tables.write_results``).
"""
from __future__ import annotations

import argparse
import sys

from regzoo.analysis.tables import write_results
from regzoo.utils.extras import MissingExtraError

PROG = 'python -m regzoo.tables'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', default='results', help='where to write models.csv/.md and the plot')
    args = parser.parse_args(argv)
    try:
        paths = write_results(args.out_dir)
    except MissingExtraError as e:
        print(f'{parser.prog}: error: {e}', file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f'wrote {kind}: {path}')
    return 0


def run(argv: list[str] | None = None) -> int:
    """The command (``python -m regzoo.tables``)."""
    return main(argv)


if __name__ == '__main__':
    sys.exit(run())
