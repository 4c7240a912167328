"""Time validate.py end to end against timm's own validation loop: same images, workers, checkpoint.

    python benchmarks/validate_vs_timm.py                                  # generated JPEG folder, random weights
    python benchmarks/validate_vs_timm.py --data-dir /data/imagenet/val --model regnety_032 --checkpoint W.safetensors

timm's validate.py is not installed with the package, so the timm side is the equivalent loop built
from timm's public API (create_model + resolve_data_config + create_dataset + create_loader), as
timm's validate.py does it. Each side runs in its own process (imports and model build included);
runs alternate so drift on a shared machine hits both. Reported: loop images/s (each side's own
clock, first batch to last), whole-process wall time, the ratio regzoo/timm, and whether the top-1
of both agrees (it must: same transform, same class order).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timm_loop(args: argparse.Namespace) -> dict:
    """timm's validate.py, reduced to its data + model path (no prefetcher on CPU, as timm on CPU)."""
    import timm
    import torch
    from timm.data import create_dataset, create_loader, resolve_data_config
    model = timm.create_model(args.model, num_classes=args.num_classes, checkpoint_path=args.checkpoint)
    data_config = resolve_data_config({'img_size': args.img_size} if args.img_size else {}, model=model,
                                      use_test_size=True)
    model.eval()
    dataset = create_dataset('', root=args.data_dir, split='validation')
    use_prefetcher = torch.cuda.is_available()
    loader = create_loader(dataset, input_size=data_config['input_size'], batch_size=args.batch_size,
                           use_prefetcher=use_prefetcher, interpolation=data_config['interpolation'],
                           mean=data_config['mean'], std=data_config['std'], num_workers=args.workers,
                           crop_pct=data_config['crop_pct'], crop_mode=data_config['crop_mode'])
    criterion = torch.nn.CrossEntropyLoss()
    n = correct = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for images, targets in loader:
            logits = model(images)
            criterion(logits, targets)
            correct += int((logits.argmax(1) == targets).sum())
            n += len(targets)
    seconds = time.perf_counter() - start
    return {'num_images': n, 'top1': round(100 * correct / n, 3), 'samples_per_sec': n / seconds}


def make_data(root: Path, classes: int, per_class: int, seed: int = 0) -> None:
    """ImageNet-like JPEGs (~400x350, varied aspect) so decode + resize cost is realistic."""
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(seed)
    for k in range(classes):
        (root / f'class_{k:03d}').mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.randint(280, 420), rng.randint(320, 500)
            grad = np.linspace(0, 1, w)[None, :, None] * rng.randint(0, 255, 3)
            arr = np.clip(grad + rng.randint(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / f'class_{k:03d}' / f'{i}.JPEG', quality=90)


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
    return wall, proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default=None, help='an ImageFolder split (default: generate one)')
    p.add_argument('--model', default='regnetx_002')
    p.add_argument('--checkpoint', default=None, help='default: random weights saved as safetensors')
    p.add_argument('--num-classes', type=int, default=None)
    p.add_argument('--img-size', type=int, default=None)
    p.add_argument('-b', '--batch-size', type=int, default=64)
    p.add_argument('-j', '--workers', type=int, default=2)
    p.add_argument('--classes', type=int, default=10, help='generated data: classes')
    p.add_argument('--per-class', type=int, default=50, help='generated data: images per class')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--timm-loop', action='store_true', help=argparse.SUPPRESS)  # internal: run the timm side
    args = p.parse_args()
    if args.timm_loop:
        print(json.dumps(timm_loop(args)))
        return

    tmp = Path(tempfile.mkdtemp(prefix='bench_validate_'))
    if args.data_dir is None:
        args.data_dir = str(tmp / 'data')
        make_data(Path(args.data_dir), args.classes, args.per_class)
        args.num_classes = args.num_classes or args.classes
    if args.checkpoint is None:
        import torch
        from safetensors.torch import save_file

        import regzoo
        torch.manual_seed(0)
        args.checkpoint = str(tmp / f'{args.model}.safetensors')
        save_file(regzoo.create_model(args.model, num_classes=args.num_classes or 1000).state_dict(), args.checkpoint)
    args.num_classes = args.num_classes or 1000
    common = ['--data-dir', args.data_dir, '--model', args.model, '--checkpoint', args.checkpoint,
              '-b', str(args.batch_size), '-j', str(args.workers)]
    common += ['--img-size', str(args.img_size)] if args.img_size else []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ours_cmd = [sys.executable, 'validate.py', *common, '--log-freq', '0', '--results-file', str(tmp / 'ours.json')]
    timm_cmd = [sys.executable, __file__, '--timm-loop', *common, '--num-classes', str(args.num_classes)]

    rows = {'regzoo validate.py': [], 'timm loop': []}
    for _ in range(args.repeats):
        wall, _ = run(ours_cmd, env)
        ours = json.loads((tmp / 'ours.json').read_text())
        rows['regzoo validate.py'].append((ours['samples_per_sec'], wall, ours['top1'], ours['num_images']))
        wall, out = run(timm_cmd, env)
        theirs = json.loads(out.strip().splitlines()[-1])
        rows['timm loop'].append((theirs['samples_per_sec'], wall, theirs['top1'], theirs['num_images']))

    print(f'model {args.model}, {rows["timm loop"][0][3]} images from {args.data_dir}, batch {args.batch_size}, '
          f'workers {args.workers}, {args.repeats} alternating runs each (median)')
    print(f'{"":20} {"loop img/s":>11} {"process wall s":>15} {"top1":>8}')
    med = {}
    for name, runs in rows.items():
        med[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        print(f'{name:20} {med[name][0]:11.1f} {med[name][1]:15.2f} {runs[0][2]:8.3f}   runs img/s: '
              + ', '.join(f'{r[0]:.1f}' for r in runs))
    ratio = med['regzoo validate.py'][0] / med['timm loop'][0]
    wall_ratio = med['timm loop'][1] / med['regzoo validate.py'][1]
    same = {r[2] for r in rows['regzoo validate.py']} == {r[2] for r in rows['timm loop']}
    print(f'ratio regzoo/timm: loop images/s {ratio:.3f}, end-to-end speed (timm wall / regzoo wall) {wall_ratio:.3f}; '
          f'top-1 {"identical" if same else "DIFFERS"}')


if __name__ == '__main__':
    main()
