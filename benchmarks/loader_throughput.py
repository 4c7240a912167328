#!/usr/bin/env python3
"""Training-loader throughput (images/s per worker: read, decode, augment, collate) of train.py's loaders over an
ImageFolder, the same images as WebDataset shards (webdataset's ShardWriter) and as an HF ``save_to_disk``
dataset, against timm's own ``timm.data.create_loader`` on the folder with the same train transform.

Images are generated (``regzoo.data.synthetic``) unless ``--folder`` gives an ImageFolder split root (with
``train/``). Prints the CPU and a markdown table. Run it on a quiet machine; ``--quick`` only checks it runs.

    python benchmarks/loader_throughput.py --workers 4 --img-size 224
    python benchmarks/loader_throughput.py --quick
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from regzoo.data.datasets import scan_image_folder  # noqa: E402
from regzoo.data.synthetic import write_image_folder  # noqa: E402
from regzoo.training.args import parse_args, resolve_args  # noqa: E402
from regzoo.training.config import RunConfig  # noqa: E402
from regzoo.training.distributed import DistInfo  # noqa: E402
from regzoo.training.loaders import train_loader, train_sampler, train_transform  # noqa: E402
from regzoo.training.splits import load_splits, stream_loader  # noqa: E402
from regzoo.utils.machine import cpu_name  # noqa: E402


def write_copies(root: Path) -> None:
    """root/img (the folder) -> root/shards (ShardWriter + classes.json) and root/hf (a DatasetDict)."""
    import datasets
    import webdataset as wds

    split_dirs = [d for d in sorted((root / 'img').iterdir()) if d.is_dir()]
    classes = sorted(scan_image_folder(split_dirs[0]))
    (root / 'shards').mkdir()
    (root / 'shards' / 'classes.json').write_text(json.dumps({'classes': classes}))
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=classes)})
    tables = {}
    for split_dir in split_dirs:
        samples = [(p, c) for c, paths in sorted(scan_image_folder(split_dir).items()) for p in paths]
        with wds.ShardWriter(str(root / 'shards' / f'{split_dir.name}-%06d.tar'), maxcount=256, verbose=0) as sink:
            for i, (path, cls) in enumerate(samples):
                sink.write({'__key__': f'{i:08d}', Path(path).suffix.lower().lstrip('.'): Path(path).read_bytes(),
                            'cls': classes.index(cls)})
        tables[split_dir.name] = datasets.Dataset.from_dict(
            {'image': [{'bytes': Path(p).read_bytes(), 'path': None} for p, _ in samples],
             'label': [classes.index(c) for _, c in samples]}, features=features)
    datasets.DatasetDict(tables).save_to_disk(str(root / 'hf'))


def regzoo_loader(data_dir: Path, args: argparse.Namespace):
    argv = ['--data-dir', str(data_dir), '--img-size', str(args.img_size), '-b', str(args.batch_size),
            '-j', str(args.workers), '--aa', args.aa] if args.aa else \
        ['--data-dir', str(data_dir), '--img-size', str(args.img_size), '-b', str(args.batch_size), '-j',
         str(args.workers)]
    run_args = resolve_args(parse_args(argv), 1)
    splits = load_splits(run_args)
    size = (args.img_size, args.img_size)
    cfg = RunConfig.create(run_args, num_classes=splits.num_classes, train_size=size, data_config={
        'input_size': (3, *size), 'interpolation': 'bilinear', 'mean': (0.485, 0.456, 0.406),
        'std': (0.229, 0.224, 0.225), 'crop_pct': 0.875})
    if splits.streams:
        loader, epochs = stream_loader(splits, cfg, DistInfo(0, 0, 1, torch.device('cpu')))
    else:
        epochs = train_sampler(splits.train, run_args, 0)
        loader = train_loader(splits.train, cfg, epochs)
    return loader, epochs, cfg


def timm_loader(folder: Path, cfg: RunConfig, args: argparse.Namespace):
    """timm's create_loader over timm's own ImageFolder dataset, the train transform replaced by train.py's."""
    from timm.data import create_dataset, create_loader

    dataset = create_dataset('', root=str(folder), split='train', is_training=True)
    loader = create_loader(dataset, input_size=(3, args.img_size, args.img_size), batch_size=args.batch_size,
                           is_training=True, use_prefetcher=False, num_workers=args.workers, persistent_workers=False)
    loader.dataset.transform = train_transform(cfg)  # the very same augmentation as regzoo's
    return loader


def rate(loader, epochs, batches: int) -> float:
    """Images/s over ``batches`` batches after the first (worker start-up excluded)."""
    if epochs is not None:
        epochs.set_epoch(0)
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            break
        n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--folder', type=Path, default=None, help='an ImageFolder root with train/ (default: generated)')
    p.add_argument('--images', type=int, default=2000, help='generated train images (default 2000)')
    p.add_argument('--src-size', type=int, default=500, help='generated image side, px')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--workers', type=int, default=4)
    p.add_argument('--batches', type=int, default=20, help='timed batches per loader')
    p.add_argument('--rounds', type=int, default=3, help='timed rounds per loader, order rotating (medians)')
    p.add_argument('--aa', default=None, help='timm auto-augment spec (default: none)')
    p.add_argument('--quick', action='store_true', help='a few small images: checks that it runs')
    args = p.parse_args()
    if args.quick:
        args.images, args.src_size, args.img_size, args.batch_size, args.workers, args.batches = 64, 64, 32, 8, 1, 3
        args.rounds = 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.folder:
            (root / 'img').symlink_to(args.folder.resolve())
        else:
            per_class = max(args.images // 10, args.batch_size)
            write_image_folder(root / 'img', 10, {'train': per_class, 'val': 2}, args.src_size, 0, ('.jpg',))
        write_copies(root)
        loaders = {f'regzoo {kind}': regzoo_loader(data_dir, args)[:2]
                   for kind, data_dir in (('folder', root / 'img'), ('shards', root / 'shards'), ('hf', root / 'hf'))}
        cfg = regzoo_loader(root / 'img', args)[2]
        loaders['timm create_loader (folder)'] = (timm_loader(root / 'img', cfg, args), None)
        # rounds with the order rotating, medians: the machine's speed drifts (time the loaders alike)
        rates: dict[str, list[float]] = {k: [] for k in loaders}
        names = list(loaders)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                rates[name].append(rate(*loaders[name], args.batches))
        results = {k: statistics.median(v) for k, v in rates.items()}
    per = max(args.workers, 1)
    print(f'CPU: {cpu_name()}; torch {torch.__version__}; {args.workers} worker(s), batch {args.batch_size}, '
          f'{args.img_size}px train crops, median of {args.rounds} rotating rounds{", " + args.aa if args.aa else ""}')
    print('| loader | img/s | img/s per worker | vs timm |')
    print('|---|---|---|---|')
    timm_rate = results['timm create_loader (folder)']
    for name, value in results.items():
        print(f'| {name} | {value:.1f} | {value / per:.1f} | {value / timm_rate:.2f}x |')


if __name__ == '__main__':
    main()
