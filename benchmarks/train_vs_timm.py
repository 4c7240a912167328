#!/usr/bin/env python3
"""Training throughput (images/s) of regzoo's RegNet vs timm's, in the same training loop.

Both models get the same weights (timm's state dict loaded strict into regzoo's), the same batch,
autocast dtype, memory format, optimizer (timm Nesterov SGD) and loss. Timed rounds alternate
between the two models so machine-load drift hits both alike; medians are reported.

    python benchmarks/train_vs_timm.py --model regnety_032 --batch-size 64 --img-size 224 --channels-last
    python benchmarks/train_vs_timm.py --model regnetx_002 --device cpu --batch-size 16 --img-size 64
"""
from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from timm.optim import create_optimizer_v2

import regzoo


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def make_step(model, device, dtype, channels_last, batch_size, img_size, num_classes):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    optimizer = create_optimizer_v2(model, opt='sgd', lr=0.01, weight_decay=5e-5, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, img_size, img_size, generator=g).to(device).contiguous(memory_format=memory_format)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def time_steps(step, steps: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='regnety_032')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default='bfloat16')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--warmup', type=int, default=5, help='untimed steps per model')
    p.add_argument('--steps', type=int, default=20, help='steps per timed round')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(0)
    reference = timm.create_model(args.model, num_classes=1000)
    ours = regzoo.create_model(args.model, num_classes=1000)
    ours.load_state_dict(reference.state_dict())  # strict: same architecture, same weights
    with torch.no_grad():
        x = torch.randn(2, 3, args.img_size, args.img_size)
        max_diff = (ours.eval()(x) - reference.eval()(x)).abs().max().item()
    steps = {name: make_step(m, device, dtype, args.channels_last, args.batch_size, args.img_size, 1000)
             for name, m in (('regzoo', ours), ('timm', reference))}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            rates[name].append(args.batch_size * args.steps / time_steps(step, args.steps, device))
    med = {name: statistics.median(r) for name, r in rates.items()}
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu ({torch.get_num_threads()} threads)'
    print(f'{args.model} on {name}, batch {args.batch_size}, {args.img_size}px, {args.dtype}, '
          f'{"channels_last" if args.channels_last else "NCHW"}; eval logits max|diff| {max_diff:.2e}')
    for n, r in rates.items():
        print(f'  {n:7s} {med[n]:9.1f} img/s  (rounds: {", ".join(f"{v:.1f}" for v in r)})')
    # per-round ratios pair each regzoo round with the timm round right after it, cancelling slow load drift
    paired = statistics.median(a / b for a, b in zip(rates['regzoo'], rates['timm']))
    print(f'  ratio regzoo/timm = {med["regzoo"] / med["timm"]:.3f} (medians), {paired:.3f} (median of paired rounds)')


if __name__ == '__main__':
    main()
