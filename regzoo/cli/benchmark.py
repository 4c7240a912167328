"""Roofline-aware benchmark: timm eager, regzoo eager, regzoo's fast path and the other engines, same weights.

    python -m regzoo.benchmark --model regnetx_002,regnety_032,regnety_160 --batch-size 32 --img-size 224 [--markdown]

The header names the machine (CPU, ISA flags, threads, torch / oneDNN, allocator) and its measured matmul
peaks (``regzoo.utils.machine``). Then, per model and variant: the engine it ran on, images/s, the ratio to timm
eager fp32 and to the fastest row *from the same interleaved run*, achieved GFLOP/s
(2 x ``regzoo.complexity`` multiply-adds x images/s, the peak's convention) and % of the fp32 peak, the
spread of the rounds, batch-1 latency, peak memory, and for lossy variants (bf16, ...) top-1 agreement with
fp32 on held-out generated images.

Method: after ``--warmup`` calls of each, the variants run one batch each per round, in an order that
rotates every round (no variant always runs after the same one), for at least ``--repeats`` rounds and
``--min-seconds``; a variant's time is the median of its rounds, its ratio the median of its per-round
ratios to timm (paired: a slow moment slows both); ``spread_pct`` is the interquartile range of its rounds
over their median. Threads default to the CPUs this process may use; ``--allocator retain`` (default)
keeps freed memory in the process so no variant pays page faults for its activations on every call.
Rows are appended to ``<out-dir>/benchmark-<host>-<date>.csv`` (default ``output/benchmark/``, untracked).
Weights are random (with non-trivial BN stats, so BN folding is exercised): no download needed.
The engine rows (``--engines``, default all): regzoo-ort and regzoo-openvino (``optimize_for_inference(engine=)``:
the ONNX file in ONNX Runtime / OpenVINO), regzoo-auto (what ``engine='auto'`` picks on the timed batch; a line on
stderr says which and why), and their int8 twins where regzoo-int8 runs. An engine whose extra is missing is
skipped with a line. Their peak memory is left blank: the profiler sees torch's allocations only.

The measuring is ``regzoo.deploy.benchmarking`` (where a variant is added); this module parses and prints.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from regzoo.deploy.benchmarking import (
    BENCH_ENGINES,
    REFERENCE,
    ROW_COLUMNS,
    TRAIN_VARIANTS,
    VARIANTS,
    BenchSettings,
    bench_model,
    default_variants,
    runnable_variants,
    with_engines,
)
from regzoo.utils.machine import Machine, Peak, describe_machine, machine_lines, measure_peaks, retain_freed_memory
from regzoo.utils.runtime import ArgumentParser, available_cpus, run_cli
from regzoo.utils.timing import MAX_ROUNDS
from regzoo.zoo.registry import REGISTRY

PROG = 'python -m regzoo.benchmark'
DEFAULT_OUT_DIR = Path('output') / 'benchmark'
MACHINE_COLUMNS = ('date', 'host', 'cpu', 'isa', 'torch', 'onednn', 'threads', 'allocator', 'fp32_peak_gflops')
COLUMNS = MACHINE_COLUMNS + ROW_COLUMNS
TABLE_COLUMNS = ('model', 'variant', 'engine', 'dtype', 'memory_format', 'img_per_s', 'spread_pct', 'ratio_vs_timm',
                 'ratio_vs_fastest', 'gflops', 'pct_fp32_peak', 'latency_bs1_ms', 'peak_mem_mb', 'top1_agree_vs_fp32')


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
                fp32_peak_gflops='' if fp32_peak is None else round(fp32_peak, 1))


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

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    p.add_argument('--model', required=True, help='comma-separated arch names, e.g. regnetx_002,regnety_032')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--compare', choices=['timm'], default='timm', help='the reference implementation (timm)')
    p.add_argument('--variants', default='',
                   help=f'comma-separated, from {", ".join(VARIANTS)} (default: the fp32 ones, plus the bf16 ones '
                        'where oneDNN has native bf16)')
    p.add_argument('--engines', default=None,
                   help=f'comma-separated, from {", ".join(BENCH_ENGINES)}: a regzoo-<engine> row each (and a '
                        'regzoo-int8-<engine> row where regzoo-int8 runs), skipped with a line where its extra is '
                        'missing (default: all of them, none with --variants; "none": none)')
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
    if args.engines is None:
        args.engines = [] if args.variants else list(BENCH_ENGINES)
    else:
        args.engines = [e.strip() for e in args.engines.split(',') if e.strip() not in ('', 'none')]
    unknown = [e for e in args.engines if e not in BENCH_ENGINES]
    if unknown:
        p.error(f'unknown engine {unknown[0]!r} in --engines: choose from {", ".join(BENCH_ENGINES)}')
    return args


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    return BenchSettings(
        batch_size=args.batch_size, img_size=args.img_size, train=args.train, channels_last=args.channels_last,
        memory_format=args.memory_format, compile=args.compile, repeats=args.repeats, min_seconds=args.min_seconds,
        warmup=args.warmup, latency_repeats=args.latency_repeats, memory=args.memory,
        agreement_images=args.agreement_images)


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # stderr: keeps the table pasteable


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    settings = settings_from_args(args)
    torch.set_num_threads(args.threads or available_cpus())
    retained = args.allocator == 'retain' and retain_freed_memory()
    allocator = 'retain freed memory (glibc)' if retained else 'default'
    # unknown names raise here, with close matches, before any timing; aliases resolve to timm's arch names
    names = [REGISTRY.resolve(n.strip()) for n in args.model.split(',') if n.strip()]
    machine = describe_machine()
    variants = (list(TRAIN_VARIANTS) if args.train else runnable_variants(
        with_engines(args.variants or default_variants(machine, bf16=args.dtype == 'bfloat16'), args.engines), _note))
    peaks = measure_peaks(machine, args.peak_size)
    fp32_peak = next(p.gflops for p in peaks if p.dtype == 'float32')
    print('\n'.join(header_lines(machine, peaks, allocator, args.markdown)), '', sep='\n', flush=True)
    rows = []
    for n in names:
        new = bench_model(n, variants, settings, fp32_peak, report=_note)
        print('\n'.join(table_lines(new, args.markdown, head=not rows)), flush=True)
        rows += new
    if any(isinstance(r['pct_fp32_peak'], float) and r['pct_fp32_peak'] > 100 for r in rows):
        print(f'{PROG}: note: a variant ran above 100 % of the fp32 peak: the peak was measured while other '
              'processes slowed it down; re-run on a quiet machine', file=sys.stderr)
    path = write_csv(rows, args.out_dir, machine_fields(machine, allocator, fp32_peak))
    print(f'wrote {path}')
    return rows


def run(argv: Sequence[str] | None = None) -> int:
    """The command (``python -m regzoo.benchmark``, ``regzoo-benchmark``): ``main`` with one-line errors."""
    return run_cli(main, PROG, argv)


if __name__ == '__main__':
    sys.exit(run())
