"""Classify images with a regzoo model: ``python -m regzoo.predict IMAGE_OR_DIR... --model NAME --pretrained``.

    python -m regzoo.predict cat.jpg --model regnety_032.ra_in1k --pretrained
    python -m regzoo.predict photos/ --checkpoint runs/x002-flowers --topk 3 --json   # a train.py run folder

Prints the top-k labels and probabilities per image: ImageNet names for ImageNet weights, a fine-tuned
run's class names for its checkpoint (see ``regzoo.predict``). A folder is searched recursively and read in
batches; an unreadable image is reported on stderr and skipped (exit 0 if any image was classified).
"""
from __future__ import annotations

import json
import logging
import sys
import types
from collections.abc import Sequence

from regzoo.utils.runtime import ArgumentParser, Progress, default_workers, error_exit, run_cli

PROG = 'python -m regzoo.predict'


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    add = p.add_argument
    add('inputs', nargs='+', metavar='IMAGE_OR_DIR', help='image files and/or folders (searched recursively)')
    add('--model', '-m', default=None, metavar='NAME',
        help='arch or arch.tag, e.g. regnety_032.ra_in1k (default with --checkpoint: the arch its config.json names)')
    weights = p.add_mutually_exclusive_group()
    weights.add_argument('--pretrained', action='store_true', help="load the model name's published weights")
    weights.add_argument('--checkpoint', default=None, metavar='PATH',
                         help='local weights: a file or saved folder (any format regzoo loads)')
    add('--topk', type=int, default=5, metavar='K', help='classes per image (default: 5)')
    add('--json', action='store_true', help='print one JSON document instead of text')
    add('-b', '--batch-size', type=int, default=32, metavar='N', help='images per batch (default: 32)')
    add('-j', '--workers', type=int, default=None, metavar='N',
        help=f'image decoding processes (default: min(available CPUs, 8) = {default_workers()}; 0: in this process)')
    add('--device', default=None, help='torch device (default: cuda if available, else cpu)')
    return p


def _text(path: str, preds) -> str:
    return '\n'.join([path] + [f'  {p.probability:7.2%}  {p.index:>5}  {p.label}' for p in preds])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    for flag in ('topk', 'batch_size'):
        if getattr(args, flag) < 1:
            parser.error(f'--{flag.replace("_", "-")} must be >= 1')
    if args.workers is not None and args.workers < 0:
        parser.error('--workers must be >= 0')
    if not (args.pretrained or args.checkpoint):
        parser.error('give --pretrained or --checkpoint PATH: a model without weights predicts noise')
    if args.model is None and not args.checkpoint:
        parser.error('--model is required with --pretrained')

    import torch

    from regzoo.eval.predict import find_images, predict_paths
    from regzoo.zoo.builder import create_model
    paths = find_images(args.inputs)
    if args.model is None:  # a saved folder or train.py run names its architecture in its config.json
        from regzoo.eval.evaluate import checkpoint_architecture
        args.model = checkpoint_architecture(args.checkpoint)
    model = create_model(args.model, pretrained=args.pretrained, checkpoint_path=args.checkpoint)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = model.to(device).eval()
    workers = default_workers() if args.workers is None else args.workers
    workers = min(workers, max(0, (len(paths) - 1) // args.batch_size))  # no idle processes for a few images

    results, skipped = [], []
    with Progress(len(paths), 'predict', unit='img') as progress:
        # labels: the model's own (a checkpoint's class names travel in its pretrained_cfg), else indices
        for path, preds in predict_paths(model, paths, args.topk, batch_size=args.batch_size, workers=workers,
                                         on_batch=progress.update):
            if not isinstance(preds, list):  # a SkippedImage
                skipped.append({'image': path, 'error': preds.reason})
                progress.write(f'{PROG}: skipped unreadable image {path} ({preds.reason})', file=sys.stderr)
            elif args.json:
                results.append({'image': path, 'predictions': [p.to_dict() for p in preds]})
            else:
                results.append(path)
                progress.write(_text(path, preds))
    if args.json:
        cfg = getattr(model, 'pretrained_cfg', None)
        weights = args.checkpoint or getattr(cfg, 'name', None) or args.model
        print(json.dumps({'model': args.model, 'weights': str(weights), 'topk': args.topk, 'results': results,
                          'skipped': skipped}, indent=2))
    if not results:
        return error_exit(PROG, f'none of the {len(paths)} image(s) could be read')
    return 0


class _CallableModule(types.ModuleType):
    """``regzoo.predict`` names both the library function and this command line. Importing this module makes the
    package attribute ``regzoo.predict`` the module, so the module is callable: ``regzoo.predict(model, images)``
    still runs ``regzoo.eval.predict.predict`` after ``import regzoo.predict``."""

    def __call__(self, *args, **kwargs):
        from regzoo.eval.predict import predict
        return predict(*args, **kwargs)


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
else:
    sys.modules[__name__].__class__ = _CallableModule
