"""What verifying a regzoo-written checkpoint costs: create_model(arch, checkpoint_path=...) on the same tensors
saved with regzoo's integrity digests and without them.

The target (issue 20): verifying costs at most 10 % of ``create_model('regnety_064', checkpoint_path=...)``,
median of 7. The file with digests is what regzoo writes (``regzoo.zoo.sharded.write_weights``, as
``save_pretrained`` and train.py do: xxh3-128 per tensor group, verified as the file is read, and the record that
every tensor was finite, which spares a verified load the NaN/Inf scan); the file without is the same tensors
through ``safetensors.torch.save_file`` with no regzoo metadata, which loads unverified (and scanned). Rounds alternate between the two files (the page cache is warm for both); the script
prints the CPU, both files, both medians and the ratio. Run it on a quiet machine:

    python benchmarks/verify_overhead.py [--arch regnety_064] [--rounds 7]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import regzoo
from regzoo.utils.machine import cpu_name
from regzoo.zoo.sharded import write_weights


def timed_load(arch: str, path: Path) -> float:
    start = time.perf_counter()
    regzoo.create_model(arch, checkpoint_path=path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='regnety_064', help='regnety_064: 30.6M parameters, 123 MB in fp32')
    parser.add_argument('--rounds', type=int, default=7, help='timed loads of each file (the median is reported)')
    args = parser.parse_args()
    print(f'CPU: {cpu_name()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads; '
          f'torch {torch.__version__}, Python {platform.python_version()}')
    torch.manual_seed(0)
    tensors = {k: v.contiguous() for k, v in regzoo.create_model(args.arch).state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        with_digests = Path(tmp) / 'regzoo' / 'model.safetensors'
        with_digests.parent.mkdir()
        write_weights(with_digests.parent, tensors)
        without = Path(tmp) / 'plain.safetensors'
        save_file(tensors, without, metadata={'format': 'pt'})
        files = {'with digests': with_digests, 'without digests': without}
        for label, path in files.items():
            with safe_open(str(path), 'pt') as f:
                keys = sorted(k for k in (f.metadata() or {}) if k.startswith('regzoo_'))
            print(f'{label:<16} {path.stat().st_size / 1e6:.0f} MB, regzoo metadata: {", ".join(keys) or "none"}')
        for path in files.values():
            timed_load(args.arch, path)  # warm up: page cache, allocator, lazy imports
        times = {label: [] for label in files}
        for _ in range(args.rounds):
            for label, path in files.items():
                times[label].append(timed_load(args.arch, path))
    medians = {label: statistics.median(t) * 1e3 for label, t in times.items()}
    print(f'create_model({args.arch!r}, checkpoint_path=...), median of {args.rounds} alternating rounds:')
    for label, ms in medians.items():
        print(f'  {label:<16} {ms:8.1f} ms   (all: {", ".join(f"{t * 1e3:.0f}" for t in times[label])})')
    a, b = medians['with digests'], medians['without digests']
    print(f'verification overhead: {(a - b) / b:+.1%} (target: at most +10 %)')


if __name__ == '__main__':
    main()
