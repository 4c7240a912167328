#!/usr/bin/env python3
"""Training throughput (images/s) of a regzoo RegNet compiled (``torch.compile``, as ``train.py --torchcompile``)
vs eager, in the same training step (forward, loss, backward, Nesterov SGD step) on the same weights and batch.

The compile time is reported apart (it is paid once per run); timed rounds alternate between the two models so
machine-load drift hits both alike; medians are reported. Run it on a quiet machine.

    python benchmarks/train_compile.py --model regnetx_002 --device cpu --batch-size 32 --img-size 64
    python benchmarks/train_compile.py --model regnety_032 --device cuda --batch-size 128 --amp bfloat16 --channels-last
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from train_vs_timm import make_step, sync, time_steps

import regzoo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='regnetx_002')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', choices=('float32', 'bfloat16', 'float16'), default='float32', help='autocast dtype')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--backend', default='inductor', help='torch.compile backend (train.py --torchcompile BACKEND)')
    p.add_argument('--mode', default=None, help='torch.compile mode (train.py --torchcompile-mode)')
    p.add_argument('--steps', type=int, default=10, help='training steps per timed round')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.amp)
    torch.manual_seed(0)
    eager = regzoo.create_model(args.model, num_classes=1000)
    compiled_module = copy.deepcopy(eager)
    steps = {'eager': make_step(eager, device, dtype, args.channels_last, args.batch_size, args.img_size, 1000)}
    compiled_module.to(device, memory_format=torch.channels_last if args.channels_last else torch.contiguous_format)
    compiled = torch.compile(compiled_module, backend=args.backend, mode=args.mode)
    steps['compiled'] = make_step(compiled, device, dtype, args.channels_last, args.batch_size, args.img_size, 1000)

    start = time.perf_counter()
    steps['compiled']()  # compiles the forward and backward graphs
    sync(device)
    compile_seconds = time.perf_counter() - start
    for step in steps.values():  # warm-up
        time_steps(step, 2, device)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rates[name].append(args.steps * args.batch_size / time_steps(step, args.steps, device))
    eager_rate, compiled_rate = (statistics.median(rates[n]) for n in ('eager', 'compiled'))
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'{args.model} train step, batch {args.batch_size} x {args.img_size}px, {args.amp}, '
          f'{"channels_last" if args.channels_last else "NCHW"}, {where}, torch {torch.__version__}')
    print(f'compile ({args.backend}{", " + args.mode if args.mode else ""}): {compile_seconds:.1f} s once')
    print('| mode | img/s (median of %d) |' % args.rounds)
    print('|---|---|')
    print(f'| eager | {eager_rate:.1f} |')
    print(f'| compiled | {compiled_rate:.1f} |')
    print(f'compiled / eager: {compiled_rate / eager_rate:.2f}x')


if __name__ == '__main__':
    main()
