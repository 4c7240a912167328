"""Command line of validate.py: flags named as in timm's validate.py, one results table for many weights.

``--fast`` (``optimize_for_inference``) and ``--int8 --calibration-dir DIR`` (``regzoo.quantize``) add a row per
weight for the faster model, scored on the same images, with its top-1 agreement with the fp32 row; ``--engine``
says what runs it (``regzoo.deploy.engines``), and the engine that ran is printed on stderr.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import sys
from pathlib import Path

import torch

from regzoo.cli import add_engine_arguments
from regzoo.data.locate import is_shard_pattern, locate_split
from regzoo.data.sharding import join_process_group, leave_process_group
from regzoo.data.transforms import CROP_MODES, INTERPOLATIONS
from regzoo.eval.evaluate import (
    EvalOptions,
    EvalResult,
    Variant,
    checkpoint_architecture,
    evaluate_variants,
    expand_model_names,
)
from regzoo.utils.files import unwritable_reason
from regzoo.utils.runtime import EXPECTED_ERRORS, ArgumentParser, default_workers, error_exit, run_cli
from regzoo.zoo.metrics import lookup_published

_logger = logging.getLogger('validate')
RESULT_FORMATS = ('.csv', '.json')
PROG = 'validate.py'


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description='Validate regzoo weights on an ImageNet-style folder.')
    add = p.add_argument
    add('--data-dir', required=True, metavar='DIR',
        help='ImageFolder split (DIR/<wnid>/*.JPEG), an ImageNet root with val/, flat val images + --label-file, '
             "WebDataset shards ('DIR/val-{000000..000063}.tar', a glob, or a folder of .tar files) or an HF "
             'save_to_disk folder')
    add('--split', default=None, metavar='NAME',
        help='the split of an HF DatasetDict or of a shard folder (default: val, else validation)')
    add('--model', '-m', default=None, metavar='NAME',
        help="arch, arch.tag, or a pattern such as 'regnety*' (default with --checkpoint: the arch its config.json "
             "names; else required)")
    add('--pretrained', action='store_true', help='load the weight (with a pattern: every matching arch.tag)')
    add('--checkpoint', default='', metavar='PATH',
        help='local checkpoint file or directory (any supported format); a train.py run folder uses its '
             'best.safetensors, and a run\'s weights bring its eval settings and class names')
    add('--num-classes', type=int, default=None, help='classifier size (default: the weight\'s, else 1000)')
    add('-b', '--batch-size', type=int, default=256, metavar='N')
    add('-j', '--workers', type=int, default=default_workers(), metavar='N',
        help='data loading processes (default: min(available CPUs, 8) = %(default)s; 0: in the main process)')
    add('--img-size', type=int, default=None, metavar='N', help='square input size (default: the weight\'s test size)')
    add('--input-size', type=int, nargs=3, default=None, metavar='N', help='C H W input size')
    add('--use-train-size', action='store_true', help='use the train input size/crop even when a test size is set')
    add('--crop-pct', type=float, default=None, metavar='P')
    add('--crop-mode', choices=CROP_MODES, default=None)
    add('--interpolation', choices=INTERPOLATIONS, default=None)
    add('--mean', type=float, nargs='+', default=None, metavar='MEAN')
    add('--std', type=float, nargs='+', default=None, metavar='STD')
    add('--channels-last', action='store_true')
    add('--amp', action='store_true', help='mixed-precision inference')
    add('--amp-dtype', choices=('float16', 'bfloat16'), default='float16')
    add('--torchcompile', nargs='?', const='inductor', default=None, metavar='BACKEND')
    add('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    add('--pin-mem', action='store_true')
    add('--results-file', default='', metavar='FILE', help='write the rows in timm\'s format; .csv or .json')
    add('--class-map', default='', metavar='FILE', help='class name -> index (.txt one per line, or .json)')
    add('--label-file', default='', metavar='FILE',
        help='ground truth for a flat val folder: LOC_val_solution.csv, "<file> <wnid|index>" lines, or one wnid/line')
    add('--num-samples', type=int, default=None, metavar='N', help='evaluate only the first N images')
    add('--log-freq', type=int, default=10, metavar='N', help='log every N batches (0: never)')
    add('--published-file', default=None, metavar='FILE', help='reference table (default: the packaged one)')
    speed = p.add_argument_group('faster models: a row each beside the fp32 row, with their top-1 agreement with it')
    speed.add_argument('--fast', action='store_true', help='also score regzoo.optimize_for_inference of the model')
    speed.add_argument('--int8', action='store_true',
                       help='also score an int8 model (regzoo.quantize; CPU), calibrated on --calibration-dir')
    speed.add_argument('--calibration-dir', default=None, metavar='DIR',
                       help='--int8: images to calibrate on, read with the eval transform (not the images scored)')
    add_engine_arguments(speed)
    return p


def check_variant_args(args: argparse.Namespace) -> None:
    """--fast / --int8 flag errors, raised before any model is built."""
    if args.int8:
        if not args.calibration_dir:
            raise ValueError('--int8 needs --calibration-dir DIR: a folder of images like the ones validated '
                             '(held out from --data-dir)')
        from regzoo.eval.predict import image_folder_problem
        reason = image_folder_problem(args.calibration_dir)
        if reason:
            raise ValueError(f'--calibration-dir: {reason}')
        if args.calibration_images is not None and args.calibration_images < 1:
            raise ValueError('--calibration-images must be >= 1')
        if torch.device(args.device).type != 'cpu':
            raise ValueError(f'--int8 runs on the CPU: add --device cpu (not {args.device})')
    elif args.calibration_dir or args.calibration_images is not None:
        raise ValueError('--calibration-dir and --calibration-images need --int8')
    if (args.fast or args.int8) and (args.amp or args.torchcompile):
        raise ValueError('--fast/--int8 are compared with the plain fp32 model: drop --amp/--torchcompile')
    check_engine_arg(args.engine, args.fast, args.int8)


def check_engine_arg(engine: str | None, fast: bool, int8: bool) -> None:
    """--engine needs --fast or --int8, and a named engine's extra (a ``MissingExtraError`` naming it)."""
    if engine is None:
        return
    if not (fast or int8):
        raise ValueError(f'--engine {engine} runs the faster model: add --fast and/or --int8')
    if engine not in ('torch', 'auto'):
        from regzoo.deploy.engines_choice import require_engine
        require_engine(engine)
        if int8:
            require_engine(engine, int8=True)


def report_engine(model, flag: str) -> None:
    """Say on stderr which engine runs the ``flag`` model (and, for auto, why)."""
    choice = model.engine_choice
    print(f'{PROG}: {flag} runs on engine {choice.engine}: {choice.reason}', file=sys.stderr, flush=True)


def _fast_model(batch_size: int, engine: str, model, data_config, transform):
    from regzoo.deploy.engines import optimize_for_inference
    device = next(model.parameters()).device
    # the memory format (and 'auto''s engine) is timed on a batch like the ones scored (at most 32: timing big
    # batches costs minutes)
    example = torch.randn(min(batch_size, 32), *data_config.input_size, device=device)
    fast = optimize_for_inference(model, engine=engine, example_input=example)
    report_engine(fast, '--fast')
    return fast


def _int8_model(folder: str, max_images: int | None, batch_size: int, workers: int, engine: str, model, data_config,
                transform):
    from regzoo.deploy.engines import quantize
    from regzoo.deploy.quantize import DEFAULT_CALIBRATION_IMAGES
    int8 = quantize(model, folder, transform=transform, max_images=max_images or DEFAULT_CALIBRATION_IMAGES,
                    batch_size=min(batch_size, 64), workers=workers, engine=engine)
    report_engine(int8, '--int8')
    return int8


def build_variants(args: argparse.Namespace) -> dict[str, Variant]:
    """The faster models asked for, by row name: 'fast' and/or 'int8'."""
    variants = {}
    if args.fast:
        variants['fast'] = functools.partial(_fast_model, args.batch_size, args.engine or 'torch')
    if args.int8:
        variants['int8'] = functools.partial(_int8_model, args.calibration_dir, args.calibration_images,
                                             args.batch_size, args.workers, args.engine or 'torch')
    return variants


def options_from_args(args: argparse.Namespace) -> tuple[EvalOptions, dict]:
    """Split parsed flags into run options and eval-transform overrides (checking what can be checked up front)."""
    if not (Path(args.data_dir).is_dir() or is_shard_pattern(args.data_dir) or args.data_dir.endswith('.tar')):
        raise FileNotFoundError(f'--data-dir {args.data_dir} does not exist or is not a directory')
    locate_split(args.data_dir, args.split)  # folder, shards or HF dataset: which, or a one-line error
    if args.results_file and Path(args.results_file).suffix.lower() not in RESULT_FORMATS:
        raise ValueError(f'--results-file {args.results_file}: use a .csv or .json file name')
    reason = args.results_file and unwritable_reason(Path(args.results_file).parent)
    if reason:
        raise ValueError(f'--results-file {args.results_file}: cannot write there: {reason}')
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise FileNotFoundError(f'--checkpoint {args.checkpoint} does not exist')
    if args.model is None:
        if not args.checkpoint:
            raise ValueError('--model is required (or a --checkpoint whose config.json names the architecture)')
        args.model = checkpoint_architecture(args.checkpoint)
    if args.checkpoint and any(c in args.model for c in '*?['):
        raise ValueError('--checkpoint needs a single --model, not a pattern')
    check_variant_args(args)
    for flag in ('batch_size', 'num_samples', 'img_size'):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f'--{flag.replace("_", "-")} must be >= 1')
    opts = EvalOptions(
        data_dir=args.data_dir, pretrained=args.pretrained, checkpoint=args.checkpoint or None,
        num_classes=args.num_classes, batch_size=args.batch_size, workers=args.workers, device=args.device,
        channels_last=args.channels_last, amp_dtype=getattr(torch, args.amp_dtype) if args.amp else None,
        torchcompile=args.torchcompile, class_map=args.class_map or None, label_file=args.label_file or None,
        num_samples=args.num_samples, log_freq=args.log_freq, pin_mem=args.pin_mem,
        use_train_size=args.use_train_size, published_file=args.published_file, split=args.split)
    overrides = {k: getattr(args, k) for k in
                 ('img_size', 'input_size', 'crop_pct', 'crop_mode', 'interpolation', 'mean', 'std')}
    return opts, overrides


def validate(args: argparse.Namespace) -> tuple[list[EvalResult], dict[str, str]]:
    """Evaluate every selected weight. A single model raises on error; a pattern records the failure and goes on."""
    opts, overrides = options_from_args(args)
    variants = build_variants(args)
    names = expand_model_names(args.model, args.pretrained)
    results, failures = [], {}
    if len(names) == 1:
        return evaluate_variants(names[0], opts, overrides, variants), failures
    for i, name in enumerate(names, 1):
        _logger.info('[%d/%d] %s', i, len(names), name)
        try:
            results += evaluate_variants(name, opts, overrides, variants)
        except Exception as err:  # noqa: BLE001 -- one missing weight must not stop a 60-weight sweep
            _logger.error('%s failed: %s', name, err)
            failures[name] = f'{type(err).__name__}: {err}'
    return results, failures


def write_results(results: list[EvalResult], path: str | Path) -> None:
    rows = [r.row() for r in results]
    path = Path(path)
    if path.suffix.lower() == '.json':
        path.write_text(json.dumps(rows if len(rows) != 1 else rows[0], indent=2) + '\n')
        return
    with path.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(EvalResult.__dataclass_fields__),
                                lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)


def format_summary(results: list[EvalResult], published_file: str | None = None) -> str:
    """A fixed-width table: measured vs published, with the reasons a gap may not be comparable."""
    head = f'{"model":34} {"img":>4} {"top1":>7} {"top5":>7} {"loss":>7} {"img/s":>8} {"params":>7} ' \
           f'{"pub top1":>8} {"Δtop1":>7} {"pub top5":>8} {"Δtop5":>7}  notes'
    lines = [head, '-' * len(head)]
    for r in results:
        def fmt(v, spec='8.3f'):
            return format(v, spec) if v is not None else '-'.rjust(int(spec.lstrip('+').split('.')[0]))
        notes = []
        if r.top1_agree_fp32 is not None:
            notes.append(f'top-1 agrees with fp32 on {r.top1_agree_fp32:.2f}% of images')
        if r.num_skipped:
            notes.append(f'{r.num_skipped} unreadable image(s) skipped')
        ref = lookup_published(r.model, published_file)
        if ref is not None and r.published_top1 is not None:
            notes += ref.settings_differ(r.img_size, r.crop_pct, r.interpolation)
        name = r.model if r.variant == 'fp32' else f'{r.model} [{r.variant}]'
        lines.append(f'{name:34} {r.img_size:>4} {r.top1:7.3f} {r.top5:7.3f} {r.loss:7.4f} {r.samples_per_sec:8.1f} '
                     f'{r.param_count:6.2f}M {fmt(r.published_top1)} {fmt(r.top1_diff, "+7.3f")} '
                     f'{fmt(r.published_top5)} {fmt(r.top5_diff, "+7.3f")}  {"; ".join(notes)}')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    parser = build_parser()
    args = parser.parse_args(argv)
    rank, args.device = join_process_group(args.device)  # under torchrun: each rank scores its share of the images
    try:
        results, failures = validate(args)
    except EXPECTED_ERRORS as err:  # one line, exit 2; anything else is a bug and keeps its traceback
        return error_exit(PROG, err)
    finally:
        leave_process_group()
    if rank != 0:  # every rank holds the summed results; the first one reports them
        return 1 if failures else 0
    if results:
        print(format_summary(results, args.published_file))
        if args.results_file:
            try:
                write_results(results, args.results_file)
            except OSError as err:  # e.g. a folder that does not exist
                return error_exit(PROG, f'--results-file {args.results_file}: {err}')
            print(f'wrote {len(results)} row(s) to {args.results_file}')
    for name, error in failures.items():
        print(f'FAILED {name}: {error.splitlines()[0]}', file=sys.stderr)  # full message logged above
    return 1 if failures else 0


def run(argv: list[str] | None = None) -> int:
    """The command (``validate.py``, ``python -m regzoo.validate``, ``regzoo-validate``)."""
    return run_cli(main, PROG, argv)


if __name__ == '__main__':
    sys.exit(run())
