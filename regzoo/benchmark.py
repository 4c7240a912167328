"""Throughput / latency / peak-memory benchmark: regzoo eager, regzoo optimized and timm, same weights, one process.

    python -m regzoo.benchmark --model regnetx_002,regnety_032 --batch-size 32 --img-size 224 --compare timm

Every variant is timed *interleaved* (one batch of each, round-robin, ``--repeats`` rounds after a
warm-up) and reported as the median, so that load from other processes hits all variants alike.
Ratios are against timm's eager fp32 model. Results are appended to ``<out-dir>/benchmark-<host>-<date>.csv``
(default ``output/benchmark/``, untracked: the tracked ``results/`` tables change only when you pass
``--out-dir results`` on purpose).
Weights are random (with non-trivial BN stats, so BN folding is exercised): no download needed.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import re
import socket
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from regzoo.data.synthetic import synthetic_batch
from regzoo.deploy.inference import cpu_name, optimize_for_inference
from regzoo.models.layers import randomize_bn
from regzoo.utils.runtime import ArgumentParser, run_cli
from regzoo.utils.timing import timed_interleaved
from regzoo.zoo.builder import create_model
from regzoo.zoo.registry import REGISTRY

PROG = 'python -m regzoo.benchmark'
DEFAULT_OUT_DIR = Path('output') / 'benchmark'
COLUMNS = ('date', 'host', 'cpu', 'torch', 'threads', 'model', 'mode', 'variant', 'dtype', 'memory_format',
           'batch_size', 'img_size', 'img_per_s', 'median_ms', 'ratio_vs_timm', 'latency_bs1_ms', 'peak_mem_mb',
           'top1_agree_vs_fp32', 'repeats')


def fit_probe_head(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
    """Set ``model.head.fc`` to a ridge-regression probe of the labels on the pooled features.

    Random-init RegNets give every input the same top-1 class, which would make a top-1 agreement
    trivially 1.0; after the probe the predictions follow the image classes, so the agreement means something.
    """
    with torch.no_grad():
        feats = torch.cat([model.forward_head(model.forward_features(x), pre_logits=True)
                           for x in images.split(batch_size)]).double()
        mu = feats.mean(0)
        f = feats - mu
        k = int(labels.max()) + 1
        target = torch.nn.functional.one_hot(labels, k).double()
        ridge = 1e-3 * f.pow(2).sum(0).mean() * torch.eye(f.shape[1], dtype=torch.float64)
        w = torch.linalg.solve(f.T @ f + ridge, f.T @ (target - target.mean(0))).T
        fc = model.head.fc
        fc.weight.zero_()
        fc.bias.fill_(-10.0)  # the classes the probe does not use never win
        fc.weight[:k] = w.float()
        fc.bias[:k] = (target.mean(0) - w @ mu).float()


def _proc_status_bytes(key: str) -> int | None:
    try:
        return int(re.search(rf'{key}:\s+(\d+) kB', Path('/proc/self/status').read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        return None


def peak_memory_mb(step: Callable[[], object]) -> float | None:
    """Peak resident memory added by one call of ``step`` (Linux: resets VmHWM via clear_refs); None elsewhere."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
    except OSError:
        return None
    base = _proc_status_bytes('VmRSS')
    step()
    peak = _proc_status_bytes('VmHWM')
    return None if base is None or peak is None else (peak - base) / 2 ** 20


def build_models(name: str, args) -> dict[str, tuple[nn.Module, torch.dtype, bool]]:
    """variant -> (model, input dtype, autocast bf16). All share one set of weights."""
    import timm
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    ours = randomize_bn(create_model(name)).eval()
    if args.dtype == 'bfloat16':
        fit_probe_head(ours, *synthetic_batch(args.agreement_images, args.img_size, seed=1), args.batch_size)
    theirs = timm.create_model(name, pretrained=False)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    models = {'timm': (theirs, torch.float32, False), 'regzoo': (ours, torch.float32, False)}
    if args.train:
        return {k: (m.train().to(memory_format=memory_format), *rest) for k, (m, *rest) in models.items()}
    models = {k: (m.eval().to(memory_format=memory_format), *rest) for k, (m, *rest) in models.items()}
    fmt = 'channels_last' if args.channels_last else args.memory_format
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    models['regzoo-opt'] = (optimize_for_inference(ours, memory_format=fmt, compile=args.compile,
                                                   example_input=x), torch.float32, False)
    if args.dtype == 'bfloat16':
        models['timm-autocast-bf16'] = (theirs, torch.float32, True)
        models['regzoo-opt-bf16'] = (optimize_for_inference(
            ours, memory_format=fmt, dtype='bfloat16', compile=args.compile, example_input=x), torch.float32, False)
    return models


def infer_step(model: nn.Module, x: torch.Tensor, autocast: bool) -> Callable[[], object]:
    def step():
        with torch.no_grad(), torch.autocast('cpu', torch.bfloat16) if autocast else contextlib.nullcontext():
            return model(x)
    return step


def train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    target = torch.randint(0, model.num_classes, (x.shape[0],))

    def step():
        loss = nn.functional.cross_entropy(model(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def top1_agreement(model: nn.Module, reference: nn.Module, images: torch.Tensor, batch_size: int) -> float:
    with torch.no_grad():
        same = sum((model(x).argmax(1) == reference(x).argmax(1)).sum().item() for x in images.split(batch_size))
    return same / len(images)


def probe_summary(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> str:
    """fp32 accuracy of the probe head on held-out generated images, and how many classes it predicts."""
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x in images.split(batch_size)])
    return f'probe top-1 {(pred == labels).float().mean().item():.3f}, {pred.unique().numel()} classes predicted'


def bench_model(name: str, args) -> list[dict]:
    models = build_models(name, args)
    cl = args.channels_last and not args.train
    shape = (args.batch_size, 3, args.img_size, args.img_size)
    x = torch.randn(shape)
    inputs = {k: x.contiguous(memory_format=torch.channels_last) if args.channels_last and not k.startswith(
        'regzoo-opt') else x for k in models}
    if args.train:
        steps = {k: train_step(m, inputs[k]) for k, (m, _, _) in models.items()}
    else:
        steps = {k: infer_step(m, inputs[k], ac) for k, (m, _, ac) in models.items()}
    times = timed_interleaved(steps, args.repeats, args.warmup)
    latency = {}
    if not args.train and args.latency_repeats:
        x1 = torch.randn(1, 3, args.img_size, args.img_size)
        steps1 = {k: infer_step(m, x1.contiguous(memory_format=torch.channels_last) if cl and not k.startswith(
            'regzoo-opt') else x1, ac) for k, (m, _, ac) in models.items()}
        latency = {k: statistics.median(v) * 1e3 for k, v in timed_interleaved(steps1, args.latency_repeats).items()}
    agree = {}
    if args.dtype == 'bfloat16' and not args.train:
        images, labels = synthetic_batch(args.agreement_images, args.img_size, seed=2)  # held out from the fit
        fp32 = models['regzoo-opt'][0]
        print(f'{name} fp32 on {len(images)} held-out generated images:', probe_summary(fp32, images, labels,
                                                                                       args.batch_size))
        agree = {k: top1_agreement(models[k][0], fp32, images, args.batch_size) for k in models if 'bf16' in k}
    base = args.batch_size / statistics.median(times['timm'])
    rows = []
    for k, (m, _, autocast) in models.items():
        med = statistics.median(times[k])
        fmt = getattr(m, 'memory_format', torch.channels_last if args.channels_last else torch.contiguous_format)
        rows.append(dict(
            model=name, mode='train' if args.train else 'infer', variant=k,
            dtype='bfloat16' if autocast or 'bf16' in k else 'float32',
            memory_format='channels_last' if fmt == torch.channels_last else 'contiguous',
            batch_size=args.batch_size, img_size=args.img_size, img_per_s=round(args.batch_size / med, 2),
            median_ms=round(med * 1e3, 1), ratio_vs_timm=round(args.batch_size / med / base, 3),
            latency_bs1_ms=round(latency[k], 2) if k in latency else '',
            peak_mem_mb=_round(peak_memory_mb(steps[k])) if args.memory else '',
            top1_agree_vs_fp32=agree.get(k, ''), repeats=args.repeats))
    return rows


def _round(v: float | None) -> float | str:
    return '' if v is None else round(v, 1)


def write_csv(rows: list[dict], out_dir: Path) -> Path:
    host, today = socket.gethostname(), datetime.date.today().isoformat()
    path = out_dir / f'benchmark-{host}-{today}.csv'
    out_dir.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    common = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), host=host, cpu=cpu_name(),
                  torch=torch.__version__, threads=torch.get_num_threads())
    with path.open('a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**common, **row})
    return path


def print_table(rows: list[dict]) -> None:
    keys = ('model', 'mode', 'variant', 'dtype', 'memory_format', 'img_per_s', 'ratio_vs_timm', 'latency_bs1_ms',
            'peak_mem_mb', 'top1_agree_vs_fp32')
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print('  '.join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print('  '.join(str(r[k]).ljust(widths[k]) for k in keys))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    p.add_argument('--model', required=True, help='comma-separated arch names, e.g. regnetx_002,regnety_032')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--compare', choices=['timm'], default='timm', help='the reference implementation (timm)')
    p.add_argument('--train', action='store_true', help='time a train step (fwd+bwd+SGD) instead of inference')
    p.add_argument('--dtype', choices=['float32', 'bfloat16'], default='float32',
                   help='bfloat16 adds timm under bf16 autocast and regzoo-opt in bf16, with top-1 agreement')
    p.add_argument('--channels-last', action='store_true', help='run the eager models (and regzoo-opt) channels_last')
    p.add_argument('--memory-format', default='auto', choices=['auto', 'channels_last', 'contiguous'],
                   help="regzoo-opt's memory format when --channels-last is not given")
    p.add_argument('--compile', action='store_true', help='torch.compile the optimized model')
    p.add_argument('--repeats', type=int, default=7, help='timed rounds (each variant once per round)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--latency-repeats', type=int, default=20, help='batch-1 rounds; 0 to skip')
    p.add_argument('--no-memory', dest='memory', action='store_false', help='skip the peak-memory pass')
    p.add_argument('--agreement-images', type=int, default=256)
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    p.add_argument('--out-dir', type=Path, default=DEFAULT_OUT_DIR,
                   help=f'folder of the CSV rows are appended to (default: {DEFAULT_OUT_DIR}/; '
                        'pass results to add to the tracked tables)')
    args = p.parse_args(argv)
    for k in ('batch_size', 'img_size', 'repeats'):
        if getattr(args, k) < 1:
            p.error(f'--{k.replace("_", "-")} must be >= 1')
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # unknown names raise here, with close matches, before any timing; aliases resolve to timm's arch names
    names = [REGISTRY.resolve(n.strip()) for n in args.model.split(',') if n.strip()]
    rows = []
    for n in names:
        rows += bench_model(n, args)
        print_table(rows)
    path = write_csv(rows, args.out_dir)
    print(f'wrote {path}')
    return rows


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
