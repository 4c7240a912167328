#!/usr/bin/env python3
"""Train a regzoo RegNet: `python train.py --data-dir DIR --model regnety_004 --recipe pycls`.

Runs DDP under `torchrun --nproc_per_node N train.py ...`. The command is `regzoo.cli.train` (also
`python -m regzoo.train`); see README "Training" and `python train.py --help`.
"""
import sys

from regzoo.cli.train import run

if __name__ == '__main__':
    sys.exit(run())
