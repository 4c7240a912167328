#!/usr/bin/env python3
"""Train a regzoo RegNet: `python train.py --data-dir DIR --model regnety_004 --recipe pycls`.

Runs DDP under `torchrun --nproc_per_node N train.py ...`. See README "Training" and
`python train.py --help`; the logic lives in regzoo/training/.
"""
import sys

from regzoo.training import TrainingInputError, main

if __name__ == '__main__':
    try:
        sys.exit(main())
    except TrainingInputError as e:
        sys.exit(f'train.py: error: {e}')
