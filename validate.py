#!/usr/bin/env python3
"""Validate regzoo weights on ImageNet(-style) data; see README "Reproducing the ImageNet numbers".

    python validate.py --data-dir /data/imagenet/val --model 'regnety*' --pretrained --results-file r.csv
"""
from regzoo.validate import main

if __name__ == '__main__':
    raise SystemExit(main())
