"""Roofline-aware benchmark: timm eager, regzoo eager and regzoo's fast path, same weights, one process.

    python -m regzoo.benchmark --model regnetx_002,regnety_032,regnety_160 --batch-size 32 --img-size 224 [--markdown]

The header names the machine (CPU, ISA flags, threads, torch / oneDNN, allocator) and its measured matmul
peaks (``regzoo.utils.machine``). Then, per model and variant: images/s, the ratio to timm eager fp32
*from the same interleaved run*, achieved GFLOP/s (2 x ``regzoo.complexity`` multiply-adds x images/s,
the peak's convention) and % of the fp32 peak, the spread of the rounds, batch-1 latency, peak memory,
and for lossy variants (bf16, ...) top-1 agreement with fp32 on held-out generated images.

Method: after ``--warmup`` calls of each, the variants run one batch each per round, in an order that
rotates every round (no variant always runs after the same one), for at least ``--repeats`` rounds and
``--min-seconds``; a variant's time is the median of its rounds, its ratio the median of its per-round
ratios to timm (paired: a slow moment slows both); ``spread_pct`` is the interquartile range of its rounds
over their median. Threads default to the CPUs this process may use; ``--allocator retain`` (default)
keeps freed memory in the process so no variant pays page faults for its activations on every call.
Rows are appended to ``<out-dir>/benchmark-<host>-<date>.csv`` (default ``output/benchmark/``, untracked).
Weights are random (with non-trivial BN stats, so BN folding is exercised): no download needed.

To add a variant (e.g. int8), add an entry to ``VARIANTS``: a builder from the ``Shared`` weights to a
callable model, its dtype, and when it runs by default.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import socket
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from regzoo.analysis.complexity import complexity
from regzoo.data.synthetic import synthetic_batch
from regzoo.deploy.inference import optimize_for_inference, top1_agreement
from regzoo.models.layers import randomize_bn
from regzoo.utils.machine import (
    Machine,
    Peak,
    describe_machine,
    machine_lines,
    measure_peaks,
    retain_freed_memory,
)
from regzoo.utils.runtime import ArgumentParser, available_cpus, run_cli
from regzoo.utils.timing import timed_interleaved
from regzoo.zoo.builder import create_model
from regzoo.zoo.registry import REGISTRY

PROG = 'python -m regzoo.benchmark'
DEFAULT_OUT_DIR = Path('output') / 'benchmark'
MACHINE_COLUMNS = ('date', 'host', 'cpu', 'isa', 'torch', 'onednn', 'threads', 'allocator', 'fp32_peak_gflops')
ROW_COLUMNS = ('model', 'mode', 'variant', 'dtype', 'memory_format', 'batch_size', 'img_size', 'img_per_s',
               'median_ms', 'spread_pct', 'ratio_vs_timm', 'gflops', 'pct_fp32_peak', 'latency_bs1_ms',
               'peak_mem_mb', 'top1_agree_vs_fp32', 'rounds')
COLUMNS = MACHINE_COLUMNS + ROW_COLUMNS
TABLE_COLUMNS = ('model', 'variant', 'dtype', 'memory_format', 'img_per_s', 'spread_pct', 'ratio_vs_timm', 'gflops',
                 'pct_fp32_peak', 'latency_bs1_ms', 'peak_mem_mb', 'top1_agree_vs_fp32')
MAX_ROUNDS = 200


@dataclass(frozen=True)
class Shared:
    """What every variant of one model is built from: one set of weights, and the run's settings."""
    regzoo_model: nn.Module  # regzoo eager fp32 (random weights, non-trivial BN; probe head if a lossy variant runs)
    timm_model: nn.Module  # timm's model with the same state dict
    example_input: torch.Tensor  # a timed batch (NCHW)
    calibration_images: torch.Tensor  # generated images the probe head was fitted on (e.g. for int8 calibration)
    memory_format: str  # the fast path's: 'auto', 'channels_last' or 'contiguous'
    compile: bool


@dataclass(frozen=True)
class Variant:
    build: Callable[[Shared], nn.Module]
    dtype: str = 'float32'  # what runs; any other dtype is lossy: its top-1 agreement with fp32 is measured
    default_on: Callable[[Machine], bool] = lambda machine: True  # runs without --variants where this is True
    autocast_bf16: bool = False
    eager: bool = False  # an eager module: --channels-last converts it and its input


def _optimized(dtype: str | None) -> Callable[[Shared], nn.Module]:
    def build(s: Shared) -> nn.Module:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', 'optimize_for_inference: this CPU has no native bfloat16')
            return optimize_for_inference(s.regzoo_model, memory_format=s.memory_format, dtype=dtype,
                                          compile=s.compile, example_input=s.example_input)
    return build


def _bf16_native(machine: Machine) -> bool:
    return machine.bf16_native


def _int8(s: Shared) -> nn.Module:
    from regzoo.deploy.quantize import quantize  # imported when the variant runs (torchao): --help stays light
    return quantize(s.regzoo_model, s.calibration_images)  # oneDNN int8 kernels, calibrated on the probe's images


def _int8_default(machine: Machine) -> bool:
    import importlib.util
    return machine.vnni and importlib.util.find_spec('torchao') is not None  # int8 pays off with VNNI


# name -> variant. REFERENCE is the denominator of every ratio; lossy variants' top-1 agreement is measured
# against regzoo eager fp32 (Shared.regzoo_model), whether or not that runs as a variant
VARIANTS: Mapping[str, Variant] = {
    'timm': Variant(lambda s: s.timm_model, eager=True),
    'regzoo': Variant(lambda s: s.regzoo_model, eager=True),
    'regzoo-opt': Variant(_optimized(None)),
    'timm-autocast-bf16': Variant(lambda s: s.timm_model, 'bfloat16', _bf16_native, autocast_bf16=True, eager=True),
    'regzoo-opt-bf16': Variant(_optimized('bfloat16'), 'bfloat16', _bf16_native),
    'regzoo-int8': Variant(_int8, 'int8', _int8_default),
}
REFERENCE = 'timm'
TRAIN_VARIANTS = ('timm', 'regzoo')


def default_variants(machine: Machine, bf16: bool = False) -> list[str]:
    """The variants that run without --variants: each one's ``default_on``, plus every bf16 one if ``bf16``."""
    return [k for k, v in VARIANTS.items() if v.default_on(machine) or (bf16 and v.dtype == 'bfloat16')]


# ------------------------------------------------------------------------------------ numbers (pure functions)

def achieved_gflops(macs_per_image: int, img_per_s: float) -> float:
    """GFLOP/s a model reaches: 2 FLOPs per multiply-add, the convention the matmul peak is counted in."""
    return 2 * macs_per_image * img_per_s / 1e9


def pct_of_peak(gflops: float, peak_gflops: float | None) -> float | None:
    return None if not peak_gflops else 100 * gflops / peak_gflops


def paired_ratio(reference: list[float], times: list[float]) -> float:
    """Speed over the reference: the median over rounds of reference time / time in the same round."""
    return statistics.median(r / t for r, t in zip(reference, times, strict=True))


def spread_pct(times: list[float]) -> float:
    """Interquartile range over median, in %: how much the rounds disagree (0 for fewer than 2 rounds)."""
    if len(times) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4, method='inclusive')
    return 100 * (q3 - q1) / statistics.median(times)


def timed_rounds(steps: Mapping[str, Callable[[], object]], min_rounds: int, min_seconds: float = 0.0,
                 warmup: int = 1, max_rounds: int = MAX_ROUNDS) -> dict[str, list[float]]:
    """``timed_interleaved`` with the order rotated every round, until ``min_rounds`` and ``min_seconds``."""
    timed_interleaved(steps, 0, warmup)
    keys = list(steps)
    times: dict[str, list[float]] = {k: [] for k in keys}
    start, r = time.perf_counter(), 0
    while r < min_rounds or (r < max_rounds and time.perf_counter() - start < min_seconds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k, v in timed_interleaved({k: steps[k] for k in order}, 1, 0).items():
            times[k] += v
        r += 1
    return times


# ------------------------------------------------------------------------------------------------ measuring

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


@contextlib.contextmanager
def _native_stderr_silenced():
    """fd 2 to /dev/null: the profiler's C++ side prints start/stop lines there that no flag turns off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(step: Callable[[], object]) -> float | None:
    """Peak bytes of live tensors during one call of ``step``, from torch.profiler's allocation records.

    Counted from the allocations themselves, not the resident size: the same under any allocator setting
    (a retained heap hides allocations in resident pages or inflates them by fragmentation). Under glibc's
    default allocator it equals the resident-size high-water mark one call adds, within 0.2 MB (timm, regzoo
    and regzoo-opt on regnetx_002 and regnety_032, batch 32). None where the profiler gives no records.
    """
    from torch.profiler import ProfilerActivity, profile
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():
        prof.start()
    try:
        step()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    try:
        records = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]']
    except AttributeError:  # the profiler's results moved: report no figure rather than a wrong one
        return None
    live = peak = 0
    for e in sorted(records, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2 ** 20 if records else None


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


def probe_summary(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> str:
    """fp32 accuracy of the probe head on held-out generated images, and how many classes it predicts."""
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x in images.split(batch_size)])
    return f'probe top-1 {(pred == labels).float().mean().item():.3f}, {pred.unique().numel()} classes predicted'


def build_variants(name: str, variants: list[str], args) -> tuple[dict[str, nn.Module], Shared]:
    import timm
    lossy = any(VARIANTS[k].dtype != 'float32' for k in variants)
    ours = randomize_bn(create_model(name)).eval()
    calibration, labels = synthetic_batch(args.agreement_images, args.img_size, seed=1)
    if lossy:
        fit_probe_head(ours, calibration, labels, args.batch_size)
    theirs = timm.create_model(name, pretrained=False)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    eager_format = torch.channels_last if args.channels_last else torch.contiguous_format
    for m in (ours, theirs):
        m.train(args.train).to(memory_format=eager_format)
    shared = Shared(ours, theirs, torch.randn(args.batch_size, 3, args.img_size, args.img_size), calibration,
                    'channels_last' if args.channels_last else args.memory_format, args.compile)
    return {k: VARIANTS[k].build(shared) for k in variants}, shared


def _input(x: torch.Tensor, variant: Variant, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and variant.eager else x


def bench_model(name: str, variants: list[str], args, fp32_peak: float | None) -> list[dict]:
    models, shared = build_variants(name, variants, args)
    x = shared.example_input
    if args.train:
        steps = {k: train_step(m, _input(x, VARIANTS[k], args.channels_last)) for k, m in models.items()}
    else:
        steps = {k: infer_step(m, _input(x, VARIANTS[k], args.channels_last), VARIANTS[k].autocast_bf16)
                 for k, m in models.items()}
    times = timed_rounds(steps, args.repeats, args.min_seconds, args.warmup)
    latency = {}
    if not args.train and args.latency_repeats:
        x1 = x[:1].clone()
        steps1 = {k: infer_step(m, _input(x1, VARIANTS[k], args.channels_last), VARIANTS[k].autocast_bf16)
                  for k, m in models.items()}
        latency = {k: statistics.median(v) * 1e3
                   for k, v in timed_rounds(steps1, args.latency_repeats, 0, args.warmup).items()}
    agree = {}
    lossy = [k for k in models if VARIANTS[k].dtype != 'float32']
    if lossy and not args.train:
        images, labels = synthetic_batch(args.agreement_images, args.img_size, seed=2)  # held out from the fit
        print(f'{name} fp32 on {len(images)} held-out generated images:',  # stderr: keeps the table pasteable
              probe_summary(shared.regzoo_model, images, labels, args.batch_size), file=sys.stderr, flush=True)
        agree = {k: round(top1_agreement(models[k], shared.regzoo_model, images, args.batch_size), 4) for k in lossy}
    macs = complexity(name, args.img_size)['flops']
    rows = []
    for k, m in models.items():
        med = statistics.median(times[k])
        fmt = getattr(m, 'memory_format', torch.channels_last if args.channels_last else torch.contiguous_format)
        img_per_s = args.batch_size / med
        gflops = None if args.train else achieved_gflops(macs, img_per_s)  # fwd+bwd FLOPs are not counted
        rows.append(dict(
            model=name, mode='train' if args.train else 'infer', variant=k, dtype=VARIANTS[k].dtype,
            memory_format='channels_last' if fmt == torch.channels_last else 'contiguous',
            batch_size=args.batch_size, img_size=args.img_size, img_per_s=round(img_per_s, 2),
            median_ms=round(med * 1e3, 1), spread_pct=round(spread_pct(times[k]), 1),
            ratio_vs_timm=round(paired_ratio(times[REFERENCE], times[k]), 3),
            gflops=_round(gflops), pct_fp32_peak=_round(None if gflops is None else pct_of_peak(gflops, fp32_peak)),
            latency_bs1_ms=_round(latency.get(k), 2),
            peak_mem_mb=_round(peak_memory_mb(steps[k]) if args.memory else None),
            top1_agree_vs_fp32=agree.get(k, ''), rounds=len(times[k])))
    return rows


def _round(v: float | None, digits: int = 1) -> float | str:
    return '' if v is None else round(v, digits)


# ------------------------------------------------------------------------------------------------- output

def csv_path(out_dir: Path, host: str, day: str) -> Path:
    """``benchmark-<host>-<day>.csv``, or ``...-<day>-<n>.csv`` where that one has other columns (older rows)."""
    for n in range(1000):
        path = out_dir / (f'benchmark-{host}-{day}.csv' if n == 0 else f'benchmark-{host}-{day}-{n}.csv')
        if not path.exists() or path.read_text().partition('\n')[0] == ','.join(COLUMNS):
            return path
    raise OSError(f'{out_dir}: too many benchmark files for {host} on {day}')


def machine_fields(machine: Machine, allocator: str, fp32_peak: float | None) -> dict:
    return dict(date=datetime.datetime.now().isoformat(timespec='seconds'), host=socket.gethostname(),
                cpu=machine.cpu, isa=' '.join(machine.isa), torch=machine.torch_version,
                onednn=machine.onednn_version, threads=machine.threads, allocator=allocator,
                fp32_peak_gflops=_round(fp32_peak))


def write_csv(rows: list[dict], out_dir: Path, common: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = csv_path(out_dir, common['host'], datetime.date.today().isoformat())
    new = not path.exists()
    with path.open('a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**common, **row})
    return path


def header_lines(machine: Machine, peaks: tuple[Peak, ...], allocator: str, markdown: bool = False) -> list[str]:
    lines = machine_lines(machine, peaks, allocator)
    return [f'- {line}' for line in lines] if markdown else lines


def table_lines(rows: list[dict], markdown: bool = False, head: bool = True) -> list[str]:
    """Rows as a fixed-width text table, or as a markdown table (pasteable into docs/benchmarks.md)."""
    if markdown:
        out = [f'| {" | ".join(TABLE_COLUMNS)} |', '|' + '---|' * len(TABLE_COLUMNS)] if head else []
        return out + [f'| {" | ".join(str(r[k]) for k in TABLE_COLUMNS)} |' for r in rows]
    widths = {k: max(len(k), 11) for k in TABLE_COLUMNS}
    widths['variant'] = max(widths['variant'], *(len(k) for k in VARIANTS))
    out = ['  '.join(k.ljust(widths[k]) for k in TABLE_COLUMNS)] if head else []
    return out + ['  '.join(str(r[k]).ljust(widths[k]) for k in TABLE_COLUMNS) for r in rows]


# ---------------------------------------------------------------------------------------------------- CLI

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    p.add_argument('--model', required=True, help='comma-separated arch names, e.g. regnetx_002,regnety_032')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--compare', choices=['timm'], default='timm', help='the reference implementation (timm)')
    p.add_argument('--variants', default='',
                   help=f'comma-separated, from {", ".join(VARIANTS)} (default: the fp32 ones, plus the bf16 ones '
                        'where oneDNN has native bf16)')
    p.add_argument('--train', action='store_true', help='time a train step (fwd+bwd+SGD) of timm and regzoo eager')
    p.add_argument('--dtype', choices=['float32', 'bfloat16'], default='float32',
                   help='bfloat16: add the bf16 variants even without native bf16')
    p.add_argument('--channels-last', action='store_true', help='run the eager models (and regzoo-opt) channels_last')
    p.add_argument('--memory-format', default='auto', choices=['auto', 'channels_last', 'contiguous'],
                   help="regzoo-opt's memory format when --channels-last is not given")
    p.add_argument('--compile', action='store_true', help='torch.compile the optimized model')
    p.add_argument('--repeats', type=int, default=10, help='minimum timed rounds (each variant once per round)')
    p.add_argument('--min-seconds', type=float, default=10.0,
                   help=f'keep adding rounds until this much time was timed (at most {MAX_ROUNDS} rounds)')
    p.add_argument('--warmup', type=int, default=3, help='untimed calls of each variant first')
    p.add_argument('--latency-repeats', type=int, default=20, help='batch-1 rounds; 0 to skip')
    p.add_argument('--no-memory', dest='memory', action='store_false', help='skip the peak-memory pass')
    p.add_argument('--agreement-images', type=int, default=256)
    p.add_argument('--threads', type=int, default=0, help='torch threads (default: the CPUs this process may use)')
    p.add_argument('--allocator', choices=['retain', 'default'], default='retain',
                   help="retain: keep freed memory in the process (glibc) so that no variant page-faults its "
                        "activations in on every call; default: leave the allocator as it is")
    p.add_argument('--peak-size', type=int, default=2048, help='side of the square matmul the peaks are timed on')
    p.add_argument('--markdown', action='store_true', help='print the header and the table as markdown')
    p.add_argument('--out-dir', type=Path, default=DEFAULT_OUT_DIR,
                   help=f'folder of the CSV rows are appended to (default: {DEFAULT_OUT_DIR}/; '
                        'pass results to add to the tracked tables)')
    args = p.parse_args(argv)
    for k in ('batch_size', 'img_size', 'repeats', 'peak_size'):
        if getattr(args, k) < 1:
            p.error(f'--{k.replace("_", "-")} must be >= 1')
    args.variants = [v.strip() for v in args.variants.split(',') if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f'unknown variant {unknown[0]!r}: choose from {", ".join(VARIANTS)}')
    if args.variants and REFERENCE not in args.variants:
        p.error(f'--variants must include {REFERENCE!r}, the reference every ratio is taken against')
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or available_cpus())
    retained = args.allocator == 'retain' and retain_freed_memory()
    allocator = 'retain freed memory (glibc)' if retained else 'default'
    # unknown names raise here, with close matches, before any timing; aliases resolve to timm's arch names
    names = [REGISTRY.resolve(n.strip()) for n in args.model.split(',') if n.strip()]
    machine = describe_machine()
    variants = (list(TRAIN_VARIANTS) if args.train else
                args.variants or default_variants(machine, bf16=args.dtype == 'bfloat16'))
    peaks = measure_peaks(machine, args.peak_size)
    fp32_peak = next(p.gflops for p in peaks if p.dtype == 'float32')
    print('\n'.join(header_lines(machine, peaks, allocator, args.markdown)), '', sep='\n', flush=True)
    rows = []
    for n in names:
        new = bench_model(n, variants, args, fp32_peak)
        print('\n'.join(table_lines(new, args.markdown, head=not rows)), flush=True)
        rows += new
    if any(isinstance(r['pct_fp32_peak'], float) and r['pct_fp32_peak'] > 100 for r in rows):
        print(f'{PROG}: note: a variant ran above 100 % of the fp32 peak: the peak was measured while other '
              'processes slowed it down; re-run on a quiet machine', file=sys.stderr)
    path = write_csv(rows, args.out_dir, machine_fields(machine, allocator, fp32_peak))
    print(f'wrote {path}')
    return rows


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
