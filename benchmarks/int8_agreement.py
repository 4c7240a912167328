#!/usr/bin/env python3
"""int8 (``regzoo.quantize`` + ONNX QDQ): accuracy and top-1 agreement on a *trained* model, and CPU speed.

1. Agreement. Generates a class-structured image set (``regzoo.data.synthetic``: many classes with close hues,
   so a short training run ends well above chance but far from 100 %, with many low-margin images), trains each
   ``--models`` arch on it with train.py's API, calibrates int8 on a separate split and reports, on a held-out
   split: top-1 of fp32 / int8 (oneDNN kernels) / int8 reference arithmetic / ONNX QDQ in onnxruntime, and top-1
   agreement int8 vs fp32 and ONNX vs PyTorch int8, with 8-bit and with reduce-range (7-bit) activations.
2. Speed. For each ``--speed-models`` arch (random weights, non-trivial BN stats), images/s at ``--batch-size``
   x ``--img-size``², interleaved rounds, medians: timm eager fp32, regzoo eager fp32, regzoo
   ``optimize_for_inference`` fp32, int8 oneDNN, int8 onnxruntime (and int8 inductor with ``--inductor``).

    python benchmarks/int8_agreement.py                          # ~10 min on 2 cores
    python benchmarks/int8_agreement.py --models regnetx_002,regnety_002 --speed-models regnetx_002,regnety_032

int8 speed-ups need int8 dot-product instructions (AVX512-VNNI / AVX-VNNI / AMX); the header says which this CPU
has. Without VNNI, oneDNN and onnxruntime use u8*s8 pair instructions whose int16 sums can overflow: compare the
reduce-range rows.
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

import regzoo
from regzoo.data.synthetic import synthetic_batch, write_image_folder
from regzoo.deploy.export import export_int8_onnx, onnx_runner, require_onnx
from regzoo.deploy.quantize import quantize_pt2e
from regzoo.eval.transform import eval_transform
from regzoo.models.layers import randomize_bn
from regzoo.utils.machine import describe_machine
from regzoo.utils.timing import timed_interleaved


def header() -> str:
    import onnxruntime
    import torchao
    m = describe_machine()
    return (f'# {m.cpu} (ISA: {", ".join(m.isa)}; int8 dot product (VNNI): {"yes" if m.vnni else "no"}), '
            f'{m.threads} threads; torch {m.torch_version}, oneDNN {m.onednn_version}, torchao {torchao.__version__}, '
            f'onnxruntime {onnxruntime.__version__}')


# ------------------------------------------------------------------------------------------------ agreement

def train(arch: str, data: Path, out: Path, args) -> Path:
    from regzoo.training import main as train_main
    code = train_main([
        '--data-dir', str(data), '--model', arch, '--img-size', str(args.img_size), '--crop-pct', '1',
        '--color-jitter', '0', '--hflip', '0', '--scale', '0.5', '1', '--workers', '0', '--epochs', str(args.epochs),
        '-b', '64', '--opt', 'sgd', '--lr', str(args.lr), '--warmup-epochs', '1', '--weight-decay', '5e-5',
        '--output', str(out), '--experiment', arch, '--log-interval', '1000', '--seed', '0'])
    if code != 0:
        raise SystemExit(f'training {arch} failed (exit {code})')
    return out / arch


def logits(fn, batches: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x) for x in batches])


def agreement_rows(arch: str, run: Path, data: Path, work: Path) -> list[dict]:
    model = regzoo.create_model(arch, checkpoint_path=run).eval()
    transform = eval_transform(model)
    test = [(x, y) for x, y in _labelled_batches(data / 'test', model, transform)]
    images, labels = [x for x, _ in test], torch.cat([y for _, y in test])
    fp32 = logits(model, images)
    rows = []
    for reduce_range in (False, True):
        start = time.perf_counter()
        int8 = quantize_pt2e(model, data / 'calib', reduce_range=reduce_range, transform=transform)
        seconds = time.perf_counter() - start
        runner = export_int8_onnx(int8, work / f'{arch}-rr{int(reduce_range)}.onnx')
        # int8.graph: the same quantized model (scales, int8 weights) run op by op in float
        q, ref, onnx = logits(int8, images), logits(int8.graph, images), logits(lambda x: runner(x)[0], images)

        def acc(z):
            return 100 * (z.argmax(1) == labels).float().mean().item()

        def agree(a, b):
            return 100 * (a.argmax(1) == b.argmax(1)).float().mean().item()
        rows.append(dict(
            model=arch, activations='7-bit (reduce_range)' if reduce_range else '8-bit', images=len(labels),
            classes=model.num_classes, top1_fp32=acc(fp32), top1_int8=acc(q), top1_int8_reference=acc(ref),
            top1_onnx=acc(onnx), agree_int8_fp32=agree(q, fp32), agree_reference_fp32=agree(ref, fp32),
            agree_onnx_int8=agree(onnx, q), agree_onnx_reference=agree(onnx, ref), quantize_s=round(seconds, 1)))
    return rows


def _labelled_batches(folder: Path, model, transform, batch_size: int = 64):
    """(images, labels) batches of an ImageFolder, labels in the run's class order."""
    from regzoo.data.datasets import build_eval_dataset, collate_eval
    names = model.pretrained_cfg.class_names
    dataset = build_eval_dataset(folder, transform, num_classes=model.num_classes,
                                 class_map={n: i for i, n in enumerate(names)} if names else None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_eval)
    for images, targets, _, _ in loader:
        yield images, targets


# ------------------------------------------------------------------------------------------------ speed

def speed_rows(arch: str, args, work: Path) -> list[dict]:
    import timm
    batch, size = args.batch_size, args.speed_img_size
    torch.manual_seed(0)
    ours = randomize_bn(regzoo.create_model(arch)).eval()
    theirs = timm.create_model(arch).eval()
    theirs.load_state_dict(ours.state_dict())
    calib, _ = synthetic_batch(args.speed_calibration_images, size, seed=1)
    x = synthetic_batch(batch, size, seed=2)[0]
    fast = regzoo.optimize_for_inference(ours, example_input=x)
    int8 = quantize_pt2e(ours, calib)
    export_int8_onnx(int8, work / 'speed.onnx')
    ort = onnx_runner(require_onnx(True), work / 'speed.onnx', threads=torch.get_num_threads())
    variants = {'timm eager fp32': theirs, 'regzoo eager fp32': ours, 'regzoo optimize_for_inference fp32': fast,
                'regzoo int8 (oneDNN)': int8, 'int8 ONNX QDQ (onnxruntime)': lambda t: ort(t)[0]}
    if args.inductor:
        variants['regzoo int8 (inductor)'] = quantize_pt2e(ours, calib, 'inductor')
    with torch.no_grad():
        times = timed_interleaved({k: (lambda f=f: f(x)) for k, f in variants.items()}, args.repeats, warmup=2)
    base = statistics.median(times['timm eager fp32'])
    rows = []
    for name, t in times.items():
        med = statistics.median(t)
        rows.append(dict(model=arch, variant=name, batch=batch, img_size=size, img_per_s=round(batch / med, 1),
                         vs_timm=round(base / med, 2), spread=round((max(t) - min(t)) / med, 2)))
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = [(lambda v: f'{v:.2f}' if isinstance(v, float) else str(v)) for _ in keys]
    lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    lines += ['| ' + ' | '.join(f(r[k]) for f, k in zip(fmt, keys)) + ' |' for r in rows]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', default='regnetx_002', help='archs to train and check agreement on')
    p.add_argument('--classes', type=int, default=40, help='classes of the generated image set')
    p.add_argument('--per-class', type=int, nargs=4, default=(20, 2, 4, 15), metavar=('TRAIN', 'VAL', 'CALIB', 'TEST'),
                   help='images per class of each split (default: %(default)s)')
    p.add_argument('--img-size', type=int, default=64, help='train/eval size of the agreement models')
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--lr', type=float, default=0.4)
    p.add_argument('--speed-models', default='regnetx_002,regnety_032', help="archs to time ('' to skip)")
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--speed-img-size', type=int, default=224)
    p.add_argument('--speed-calibration-images', type=int, default=32)
    p.add_argument('--repeats', type=int, default=7, help='timed rounds per variant (interleaved)')
    p.add_argument('--inductor', action='store_true', help='also time the inductor backend (needs a C++ compiler)')
    p.add_argument('--out', default=None, help='also write the rows to this JSON file')
    args = p.parse_args(argv)
    print(header(), flush=True)
    results = {'agreement': [], 'speed': []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = [m for m in args.models.split(',') if m]
        if models:
            data = write_image_folder(work / 'data', args.classes, dict(zip(('train', 'val', 'calib', 'test'),
                                                                            args.per_class)),
                                      size=(args.img_size, args.img_size + args.img_size // 2), seed=0)
            for arch in models:
                start = time.perf_counter()
                run = train(arch, data, work / 'runs', args)
                print(f'trained {arch} in {time.perf_counter() - start:.0f} s', flush=True)
                results['agreement'] += agreement_rows(arch, run, data, work)
            print('\n' + table(results['agreement']), flush=True)
        for arch in [m for m in args.speed_models.split(',') if m]:
            results['speed'] += speed_rows(arch, args, work)
            print('\n' + table([r for r in results['speed'] if r['model'] == arch]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
