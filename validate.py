#!/usr/bin/env python3
"""Validate regzoo weights on ImageNet(-style) data; see README "Reproducing the ImageNet numbers".

    python validate.py --data-dir /data/imagenet/val --model 'regnety*' --pretrained --results-file r.csv

The command is `regzoo.cli.validate` (also `python -m regzoo.validate`).
"""
import sys

from regzoo.cli.validate import run

if __name__ == '__main__':
    sys.exit(run())
