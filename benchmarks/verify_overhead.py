"""What verifying a checkpoint's bytes costs: create_model(arch, checkpoint_path=...) with and without the checks.

Verification is the zip CRC-32 of every record of a torch file and the sha256 digests regzoo stores in the
safetensors files it writes. Both run in a background thread while the model is built (``read_checkpoint(
defer_verification=True)``); this script times the whole call a user waits for, and the bare read, with the
checks on and switched off (the checks replaced by no-ops), in interleaved rounds, and prints medians.

    python benchmarks/verify_overhead.py [--arch regnetx_064] [--rounds 9]
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import regzoo
from regzoo.deploy.inference import cpu_name
from regzoo.zoo import loading


@contextlib.contextmanager
def checks_off():
    """The two checks replaced by no-ops (what loading cost before checkpoints were verified)."""
    saved = loading.bad_zip_record, loading.failed_groups
    loading.bad_zip_record, loading.failed_groups = (lambda path: None), (lambda tensors, metadata: None)
    try:
        yield
    finally:
        loading.bad_zip_record, loading.failed_groups = saved


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='regnetx_064', help='regnetx_064: 26.2M parameters, 105 MB in fp32')
    parser.add_argument('--rounds', type=int, default=9)
    args = parser.parse_args()
    print(f'CPU: {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}, '
          f'Python {platform.python_version()}')
    with tempfile.TemporaryDirectory() as tmp:
        model = regzoo.create_model(args.arch)
        files = {'torch .pth (zip CRC-32)': Path(tmp) / 'model.pth',
                 'regzoo safetensors (sha256)': regzoo.save_pretrained(model, Path(tmp) / 'saved', format='timm')
                 / 'model.safetensors'}
        torch.save(model.state_dict(), files['torch .pth (zip CRC-32)'])
        size = files['torch .pth (zip CRC-32)'].stat().st_size
        print(f'{args.arch}: {size / 1e6:.0f} MB of weights; median of {args.rounds} interleaved rounds, '
              'warm page cache')
        print(f'{"file":<30} {"step":<14} {"checked ms":>11} {"unchecked ms":>13} {"overhead":>9}')
        for label, path in files.items():
            steps = {'read_checkpoint': lambda: loading.read_checkpoint(path),
                     'create_model': lambda: regzoo.create_model(args.arch, checkpoint_path=path)}
            for step, fn in steps.items():
                fn()  # warm up: page cache, allocator, lazy imports
                on, off = [], []
                for _ in range(args.rounds):
                    on.append(timed(fn))
                    with checks_off():
                        off.append(timed(fn))
                a, b = statistics.median(on) * 1e3, statistics.median(off) * 1e3
                print(f'{label:<30} {step:<14} {a:>11.1f} {b:>13.1f} {(a - b) / b:>+9.1%}')


if __name__ == '__main__':
    main()
