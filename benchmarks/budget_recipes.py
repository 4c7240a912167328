"""Top-1 at a wall-clock budget: train.py --recipe fast vs the pycls-style flags vs timm's own train.py.

Real photos: the CIFAR-10 sample of ../shared/data (10 classes, 1,000 train + 200 val per class). Two splits:
- ``tune``: the train folder cut into 800 train / 200 held-out images per class; every recipe choice was
  ablated here;
- ``final``: all 1,000 train images per class against the 200 val ones, which no choice was tuned on.

One training run per call, appended as a row to ``--results`` (CSV); ``--table`` prints the rows as markdown.
The wall time is the whole process (start-up, training, every validation), measured here; time nothing while
other work runs (two cores shared slow every run down unevenly).

    python benchmarks/budget_recipes.py --split tune --config pycls --epochs 8 --seed 0
    python benchmarks/budget_recipes.py --split final --config fast --time-budget 6 --seed 0
    python benchmarks/budget_recipes.py --split final --config timm --epochs 8 --timm-train ~/pytorch-image-models/train.py
    python benchmarks/budget_recipes.py --table
    python benchmarks/budget_recipes.py --split final --plot docs/budget-curve.png   # top-1 vs wall (regzoo[plot])

timm's train.py is not in timm's wheel: pass a checkout's (``--timm-train``). Configs (``--config``), all
RegNetX-200MF (regnetx_002) from scratch at 64 px (the 32 px photos upscaled), batch 128:
- ``pycls``: ``--recipe pycls`` (the paper's flags) in its strongest short form: warmup 1 epoch stepped per
  update instead of 5 per epoch;
- ``timm``: timm's train.py with the same flags (timm has no PCA lighting and never decays norm/bias);
- ``fast``: ``--recipe fast``; ``fast-...``: the recipe less one of its choices (``ABLATION``).
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / 'shared' / 'data' / 'cifar10-12k.tar.gz'
TUNE_TRAIN_PER_CLASS = 800
COMMON = ['--model', 'regnetx_002', '--img-size', '64', '-b', '128']
PYCLS = ['--recipe', 'pycls', *COMMON, '--warmup-epochs', '1', '--sched-on-updates']
# timm's train.py with the pycls flags (lr 0.1 x 128/128; warmup from 0.1 x lr, stepped per update; resize
# 64/0.875 then crop for eval; no label smoothing and no color jitter, which timm turns on by default)
TIMM = ['--model', 'regnetx_002', '--img-size', '64', '-b', '128', '--opt', 'sgd', '--momentum', '0.9',
        '--weight-decay', '5e-5', '--lr', '0.1', '--sched', 'cosine', '--sched-on-updates', '--warmup-epochs', '1',
        '--warmup-lr', '0.01', '--warmup-prefix', '--min-lr', '0', '--cooldown-epochs', '0', '--crop-pct', '0.875',
        '--interpolation', 'bilinear', '--train-interpolation', 'bilinear', '--smoothing', '0',
        '--color-jitter', '0', '--scale', '0.08', '1.0', '--model-kwargs', 'zero_init_last=False']
FAST = ['--recipe', 'fast', *COMMON]
# the ablation: the fast recipe less one of its choices at a time (same budget)
ABLATION = {
    'fast-no-resizing': [*FAST, '--train-sizes', '1.0'],
    'fast-no-smoothing': [*FAST, '--smoothing', '0'],
    'fast-scale-0.08': [*FAST, '--scale', '0.08', '1.0'],
    'fast-lr-0.1': [*FAST, '--lr-base', '0.1'],
    'fast-pycls-init': [*FAST, '--no-zero-init-last', '--decay-norm-bias'],
}
CONFIGS = {'pycls': PYCLS, 'fast': FAST, **ABLATION}
FIELDS = ('when', 'split', 'config', 'seed', 'epochs', 'time_budget', 'wall_s', 'top1', 'top5', 'eval_size', 'cpu',
          'threads', 'extra', 'top1_by_eval_size')


def prepare(data: Path, work: Path) -> dict[str, Path]:
    """{'tune': folder, 'final': folder} with train/ and val/ ImageFolder trees (extracted once)."""
    root = work / 'cifar'
    if not (root / 'val').is_dir():
        if not data.is_file():
            raise SystemExit(f'budget_recipes.py: error: {data} not found; give --data')
        with tarfile.open(data) as tar:
            tar.extractall(work / 'cifar.partial', filter='data')
        (work / 'cifar.partial').rename(root)
    tune = work / 'tune'
    if not (tune / 'val').is_dir():
        for cls in sorted(p.name for p in (root / 'train').iterdir()):
            images = sorted((root / 'train' / cls).iterdir())
            for split, part in (('train', images[:TUNE_TRAIN_PER_CLASS]), ('val', images[TUNE_TRAIN_PER_CLASS:])):
                (tune / split / cls).mkdir(parents=True, exist_ok=True)
                for image in part:
                    (tune / split / cls / image.name).symlink_to(image)
    return {'tune': tune, 'final': root}


def cpu() -> str:
    """The CPU and its ISA flags, as regzoo's benchmarks print them (``regzoo.utils.machine``)."""
    from regzoo.utils.machine import cpu_flags, cpu_name

    return f'{cpu_name()} ({" ".join(cpu_flags()[0]) or "no listed ISA flags"})'


def last_row(summary: Path) -> dict[str, str]:
    with summary.open(newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f'budget_recipes.py: error: {summary} has no epochs')
    return rows[-1]


def run(args) -> dict:
    folders = prepare(Path(args.data), Path(args.work))
    data, out = folders[args.split], Path(args.work) / 'runs'
    name = f'{args.split}-{args.config}-s{args.seed}-{args.epochs or "b" + str(args.time_budget)}'
    length = ['--time-budget', str(args.time_budget)] if args.time_budget else ['--epochs', str(args.epochs)]
    if args.config == 'timm':
        if not args.timm_train:
            raise SystemExit('budget_recipes.py: error: --config timm needs --timm-train PATH (timm\'s train.py)')
        command = [sys.executable, args.timm_train, '--data-dir', str(data), '--val-split', 'val', '--num-classes',
                   '10', '--device', 'cpu', '--workers', str(args.workers), '--seed', str(args.seed), '--output',
                   str(out), '--experiment', name, '--log-interval', '1000', *TIMM,
                   # timm's --warmup-prefix runs the warmup before --epochs: the run is --epochs + 1 epochs
                   '--epochs', str(args.epochs - 1)]
    else:
        command = [sys.executable, str(REPO / 'train.py'), '--data-dir', str(data), '--workers', str(args.workers),
                   '--seed', str(args.seed), '--output', str(out), '--experiment', name, '--overwrite',
                   '--log-interval', '1000', *CONFIGS[args.config], *length, *args.extra]
    print('$', ' '.join(command), flush=True)
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    log = out / f'{name}.log'
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout)
    if done.returncode:
        raise SystemExit(f'budget_recipes.py: error: the run failed (exit {done.returncode}); see {log}')
    row = last_row(out / name / 'summary.csv')
    top1 = row.get('top1') or row.get('eval_top1')
    top5 = row.get('top5') or row.get('eval_top5')
    epochs = int(row['epoch']) + 1
    eval_size = ''
    if args.config != 'timm':
        import yaml
        saved = yaml.safe_load((out / name / 'args.yaml').read_text())
        eval_size = saved['data_config']['input_size'][-1]
    by_size = ' '.join(f'{size}:{eval_top1(out / name, data / "val", size, args.workers):.2f}'
                       for size in args.eval_sizes) if args.config != 'timm' else ''
    return {'when': time.strftime('%Y-%m-%dT%H:%M:%S'), 'split': args.split, 'config': args.config,
            'seed': args.seed, 'epochs': epochs, 'time_budget': args.time_budget or '', 'wall_s': f'{wall:.1f}',
            'top1': f'{float(top1):.2f}', 'top5': f'{float(top5):.2f}', 'eval_size': eval_size, 'cpu': cpu(),
            'threads': os.environ.get('OMP_NUM_THREADS', str(os.cpu_count())), 'extra': ' '.join(args.extra),
            'top1_by_eval_size': by_size}


def eval_top1(run_dir: Path, val: Path, size: int, workers: int) -> float:
    """validate.py's top-1 of the run's last weights at eval size ``size`` (the run's crop and filter)."""
    import json
    results = run_dir / f'eval-{size}.json'
    command = [sys.executable, str(REPO / 'validate.py'), '--data-dir', str(val), '--checkpoint',
               str(run_dir / 'last.safetensors'), '--img-size', str(size), '--workers', str(workers),
               '--results-file', str(results)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, env={**os.environ, 'PYTHONPATH': str(REPO)})
    rows = json.loads(results.read_text())
    return float((rows[0] if isinstance(rows, list) else rows)['top1'])


def table(results: Path) -> str:
    with results.open(newline='') as f:
        rows = list(csv.DictReader(f))
    lines = ['| split | config | seed | epochs | budget (min) | wall (min) | top-1 | top-5 | eval px | extra | '
             'top-1 at other eval sizes |', '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['split']} | {r['config']} | {r['seed']} | {r['epochs']} | {r['time_budget']} | "
                     f"{float(r['wall_s']) / 60:.2f} | {r['top1']} | {r['top5']} | {r['eval_size']} | {r['extra']} | "
                     f"{r.get('top1_by_eval_size', '')} |")
    cpus = sorted({r['cpu'] for r in rows})
    return '\n'.join(lines) + f'\n\nCPU: {", ".join(cpus)}; {platform.python_version()}'


def plot(results: Path, path: Path, split: str = 'final') -> None:
    """The budget curve: top-1 against wall time, one colour per config; every run is a marker, and each
    config's seed-0 runs are joined in order of wall time (the other seeds show the spread)."""
    from regzoo.utils.extras import require

    require('matplotlib', 'plot', 'the budget-curve plot').use('Agg')
    import matplotlib.pyplot as plt

    with results.open(newline='') as f:
        rows = [r for r in csv.DictReader(f) if r['split'] == split and not r['extra']]
    if not rows:
        raise SystemExit(f'budget_recipes.py: error: {results} has no {split!r} runs without extra flags')
    names = {'fast': 'regzoo train.py --recipe fast', 'pycls': 'regzoo train.py, pycls-style flags',
             'timm': "timm's train.py, the pycls flags"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for config in sorted({r['config'] for r in rows}):
        runs = sorted((float(r['wall_s']) / 60, float(r['top1']), r['seed']) for r in rows if r['config'] == config)
        points = ax.scatter([m for m, _, _ in runs], [t for _, t, _ in runs], s=18, label=names.get(config, config))
        line = [(m, t) for m, t, seed in runs if seed == '0']
        ax.plot([m for m, _ in line], [t for _, t in line], color=points.get_facecolor()[0], linewidth=1)
    ax.set_xlabel('wall time of the whole run (minutes)')
    ax.set_ylabel('top-1 on the held-out photos (%)')
    ax.set_title(f'RegNetX-200MF from scratch, CIFAR-10 sample at 64 px ({split} split)', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    p.add_argument('--config', choices=(*CONFIGS, 'timm'))
    p.add_argument('--split', choices=('tune', 'final'), default='tune')
    p.add_argument('--epochs', type=int, default=None)
    p.add_argument('--time-budget', type=float, default=None, help='minutes (regzoo configs: --time-budget)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--data', default=str(DEFAULT_DATA), help='the CIFAR-10 sample tar.gz')
    p.add_argument('--work', default='/tmp/regzoo-budget', help='extracted data and the runs')
    p.add_argument('--results', default=None, help='CSV the row is appended to (default: WORK/results.csv)')
    p.add_argument('--timm-train', default=None, help="timm's train.py (from a pytorch-image-models checkout)")
    p.add_argument('--eval-sizes', type=int, nargs='*', default=(),
                   help="also evaluate the run's last weights at these sizes with validate.py (not timed)")
    p.add_argument('--table', action='store_true', help='print the results CSV as a markdown table and exit')
    p.add_argument('--plot', default=None, metavar='PNG', help='draw the budget curve of --split from the results '
                   'CSV (top-1 vs wall time per config; needs regzoo[plot]) and exit')
    p.add_argument('extra', nargs='*', help='more train.py flags after --, e.g. -- --smoothing 0.2')
    args = p.parse_args(argv)
    results = Path(args.results or Path(args.work) / 'results.csv')
    if args.table:
        print(table(results))
        return 0
    if args.plot:
        plot(results, Path(args.plot), args.split)
        return 0
    if not args.config or bool(args.epochs) == bool(args.time_budget):
        p.error('give --config and one of --epochs / --time-budget')
    if args.time_budget and args.config == 'timm':
        p.error("timm's train.py has no time budget: give --epochs")
    row = run(args)
    new = not results.is_file()
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open('a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    print(', '.join(f'{k}={v}' for k, v in row.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
