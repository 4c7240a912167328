#!/usr/bin/env python3
"""Train a regzoo RegNet: `python train.py --data-dir DIR --model regnety_004 --recipe pycls`.

Runs DDP under `torchrun --nproc_per_node N train.py ...`. See README "Training" and
`python train.py --help`; the logic lives in regzoo/training/. Exit codes: 0 done; 2 bad input (one line
on stderr: a missing path, a bad flag or kwarg, an unreadable checkpoint); 128 + N after a signal N stopped
the run (saved, resumable); 1 an unexpected error (with its traceback).
"""
import sys

from regzoo.training import TrainingInputError, main
from regzoo.utils.runtime import error_exit

if __name__ == '__main__':
    try:
        sys.exit(main())
    except TrainingInputError as e:
        sys.exit(error_exit('train.py', e))
