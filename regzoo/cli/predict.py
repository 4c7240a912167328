"""Classify images with a regzoo model: ``python -m regzoo.cli.predict IMAGE_OR_DIR... --model NAME --pretrained``.

    python -m regzoo.cli.predict cat.jpg --model regnety_032.ra_in1k --pretrained
    python -m regzoo.cli.predict photos/ --checkpoint runs/x002-flowers --topk 3 --json   # a train.py run folder
    python -m regzoo.cli.predict photos/ --checkpoint runs/x002-flowers --int8 --calibration-dir calib/ --output p.csv

Prints the top-k labels and probabilities per image: ImageNet names for ImageNet weights, a fine-tuned
run's class names for its checkpoint (see ``regzoo.predict``). A folder is searched recursively and read in
batches; an unreadable image is reported on stderr and skipped (exit 0 if any image was classified).
``--output FILE`` also writes them to a .csv (one row per image and rank) or .json file. ``--fast``
(``optimize_for_inference``) and ``--int8`` (``regzoo.quantize`` on ``--calibration-dir``) predict with the faster
model and report how often its top-1 class agrees with the fp32 model's on these images; ``--engine`` says what runs
it (torch, onnxruntime, openvino, or auto: the fastest, measured), and the engine that ran is printed on stderr.
"""
from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from regzoo.cli import add_engine_arguments
from regzoo.utils.runtime import ArgumentParser, Progress, default_workers, error_exit, run_cli

PROG = 'python -m regzoo.cli.predict'
OUTPUT_FORMATS = ('.csv', '.json')
CSV_COLUMNS = ('image', 'rank', 'index', 'label', 'probability', 'name', 'error')


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
    add('--output', default=None, metavar='FILE',
        help='also write the predictions to FILE: .csv (one row per image and rank) or .json (as --json prints)')
    speed = p.add_argument_group('faster models (each reports its top-1 agreement with fp32 on these images)')
    variant = speed.add_mutually_exclusive_group()
    variant.add_argument('--fast', action='store_true', help='predict with regzoo.optimize_for_inference')
    variant.add_argument('--int8', action='store_true', help='predict with an int8 model (regzoo.quantize; CPU)')
    speed.add_argument('--calibration-dir', default=None, metavar='DIR',
                       help='--int8: images to calibrate the activations on (like the ones to classify)')
    add_engine_arguments(speed)
    return p


def check_args(parser: ArgumentParser, args) -> None:
    """Flag errors found before any model is built: each one line and exit code 2."""
    for flag in ('topk', 'batch_size'):
        if getattr(args, flag) < 1:
            parser.error(f'--{flag.replace("_", "-")} must be >= 1')
    if args.workers is not None and args.workers < 0:
        parser.error('--workers must be >= 0')
    if not (args.pretrained or args.checkpoint):
        parser.error('give --pretrained or --checkpoint PATH: a model without weights predicts noise')
    if args.model is None and not args.checkpoint:
        parser.error('--model is required with --pretrained')
    if args.output is not None:
        from regzoo.utils.files import unwritable_reason
        if Path(args.output).suffix.lower() not in OUTPUT_FORMATS:
            parser.error(f'--output {args.output}: use a .csv or .json file name')
        reason = unwritable_reason(Path(args.output).parent)
        if reason:
            parser.error(f'--output {args.output}: cannot write there: {reason}')
    if args.int8:
        if args.calibration_dir is None:
            parser.error('--int8 needs --calibration-dir DIR: a folder of images like the ones to classify')
        from regzoo.eval.predict import image_folder_problem
        reason = image_folder_problem(args.calibration_dir)
        if reason:
            parser.error(f'--calibration-dir: {reason}')
        if args.calibration_images is not None and args.calibration_images < 1:
            parser.error('--calibration-images must be >= 1')
        if args.device not in (None, 'cpu'):
            parser.error(f'--int8 runs on the CPU: drop --device {args.device}')
    elif args.calibration_dir is not None or args.calibration_images is not None:
        parser.error('--calibration-dir and --calibration-images need --int8')
    if args.engine is not None and not (args.fast or args.int8):
        parser.error(f'--engine {args.engine} runs the faster model: add --fast or --int8')
    if args.engine not in (None, 'torch', 'auto'):  # a missing extra: one line naming it, before any model is built
        from regzoo.deploy.engines_choice import require_engine
        require_engine(args.engine, int8=args.int8)


def faster_model(args, model, num_images: int):
    """The --fast or --int8 version of ``model`` (None without either), run by ``--engine`` (default torch)."""
    engine = args.engine or 'torch'
    if args.fast:
        import torch

        from regzoo.data.transforms import resolve_data_config
        from regzoo.deploy.engines import optimize_for_inference
        size = resolve_data_config(model=model).input_size
        example = torch.randn(max(1, min(args.batch_size, num_images)), model.in_chans, *size[1:])
        return optimize_for_inference(model, engine=engine, example_input=example.to(next(model.parameters()).device))
    if args.int8:
        from regzoo.deploy.engines import quantize
        from regzoo.deploy.quantize import DEFAULT_CALIBRATION_IMAGES
        return quantize(model, args.calibration_dir, max_images=args.calibration_images or DEFAULT_CALIBRATION_IMAGES,
                        batch_size=args.batch_size, engine=engine)
    return None


def write_output(path: str, doc: dict) -> None:
    """``doc`` (the --json document) to ``path``, atomically: .json as is, .csv one row per image and rank
    (an unreadable image: one row with its error)."""
    from regzoo.utils.files import atomic_write

    def write_csv(tmp: Path) -> None:
        with tmp.open('w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator='\n')
            writer.writeheader()
            for result in doc['results']:
                for rank, pred in enumerate(result['predictions'], 1):
                    writer.writerow({'image': result['image'], 'rank': rank, **pred})
            for skipped in doc['skipped']:
                writer.writerow({'image': skipped['image'], 'error': skipped['error']})

    if Path(path).suffix.lower() == '.json':
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + '\n'))
    else:
        atomic_write(path, write_csv)


def _text(path: str, preds) -> str:
    return '\n'.join([path] + [f'  {p.probability:7.2%}  {p.index:>5}  {p.label}' for p in preds])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    check_args(parser, args)

    import torch

    from regzoo.eval.predict import Agreement, find_images, predict_paths
    from regzoo.zoo.builder import create_model
    paths = find_images(args.inputs)
    if args.model is None:  # a saved folder or train.py run names its architecture in its config.json
        from regzoo.eval.evaluate import checkpoint_architecture
        args.model = checkpoint_architecture(args.checkpoint)
    model = create_model(args.model, pretrained=args.pretrained, checkpoint_path=args.checkpoint)
    device = 'cpu' if args.int8 else args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = model.to(device).eval()
    faster = faster_model(args, model, len(paths))
    agreement = None if faster is None else Agreement(faster, model)
    variant = 'fast' if args.fast else 'int8' if args.int8 else 'fp32'
    if faster is not None:  # stderr: --json keeps stdout one document (which also names the engine)
        print(f'{PROG}: --{variant} runs on engine {faster.engine_choice.engine}: {faster.engine_choice.reason}',
              file=sys.stderr, flush=True)
    workers = default_workers() if args.workers is None else args.workers
    workers = min(workers, max(0, (len(paths) - 1) // args.batch_size))  # no idle processes for a few images

    results, skipped = [], []
    with Progress(len(paths), 'predict', unit='img') as progress:
        # labels: the model's own (a checkpoint's class names travel in its pretrained_cfg), else indices
        for path, preds in predict_paths(model, paths, args.topk, batch_size=args.batch_size, workers=workers,
                                         on_batch=progress.update, forward=agreement):
            if not isinstance(preds, list):  # a SkippedImage
                skipped.append({'image': path, 'error': preds.reason})
                progress.write(f'{PROG}: skipped unreadable image {path} ({preds.reason})', file=sys.stderr)
                continue
            results.append({'image': path, 'predictions': [p.to_dict() for p in preds]})
            if not args.json:
                progress.write(_text(path, preds))
    cfg = getattr(model, 'pretrained_cfg', None)
    weights = args.checkpoint or getattr(cfg, 'name', None) or args.model
    doc = {'model': args.model, 'weights': str(weights), 'topk': args.topk, 'variant': variant, 'results': results,
           'skipped': skipped}
    if faster is not None:
        doc['engine'] = faster.engine_choice.engine
    if agreement is not None:
        doc['top1_agreement_with_fp32'] = {'fraction': agreement.fraction, 'same': agreement.same,
                                           'images': agreement.total}
    if args.json:
        print(json.dumps(doc, indent=2))
    elif agreement is not None and agreement.total:
        print(f'top-1 agreement of the {variant} model with fp32: {agreement.fraction:.2%} '
              f'({agreement.same}/{agreement.total} images)')
    if args.output is not None:
        write_output(args.output, doc)
        print(f'wrote {len(results)} prediction(s) to {args.output}', file=sys.stderr)
    if not results:
        return error_exit(PROG, f'none of the {len(paths)} image(s) could be read')
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """The command (``python -m regzoo.cli.predict``, ``regzoo-predict``): ``main`` with one-line errors."""
    return run_cli(main, PROG, argv)


if __name__ == '__main__':
    sys.exit(run())
