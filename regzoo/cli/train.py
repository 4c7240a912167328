"""Train a regzoo RegNet: ``python -m regzoo.train --data-dir DIR --model regnety_004 --recipe pycls``.

Also the root ``train.py``; runs DDP under ``torchrun --nproc_per_node N train.py ...``. See README "Training"
and ``--help``; the logic lives in ``regzoo.training``. Exit codes: 0 done; 2 bad input (one line on stderr: a
missing path, a bad flag or kwarg, an unreadable checkpoint); 128 + N after a signal N stopped the run (saved,
resumable); 1 an unexpected error (with its traceback).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

from regzoo.utils.runtime import error_exit

PROG = 'train.py'  # the name training's own argument parser reports errors under


def run(argv: Sequence[str] | None = None) -> int:
    """Train with ``argv`` (default: the command line); returns the exit code."""
    from regzoo.training import TrainingInputError, main  # here: `--help` of other commands stays light
    try:
        return main(None if argv is None else list(argv))
    except TrainingInputError as e:
        return error_exit(PROG, e)


if __name__ == '__main__':
    sys.exit(run())
