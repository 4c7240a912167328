"""Command line of the exporter: ``python -m regzoo.export --model NAME --format {onnx,pt2,torchscript} --out FILE``.

    python -m regzoo.export --model regnety_032 --format onnx --out regnety_032.onnx
    python -m regzoo.export --model regnetx_002 --checkpoint ft.safetensors --format pt2 --out x002.pt2
    python -m regzoo.export --model regnetx_002 --checkpoint run/ --int8 --calibration-dir calib/ --out x002-int8.onnx

The export itself (and its parity check against eager PyTorch) is ``regzoo.deploy.export``. ``--int8`` quantizes
the model (``regzoo.quantize``: BN folded, per-channel int8 weights, activations calibrated on the images of
``--calibration-dir``, read with the model's eval transform) and writes ONNX QDQ; it reports how often the file's
top-1 class agrees with the PyTorch int8 model and with fp32 (on ``--check-dir``, default the calibration images).
An ONNX file is checked in ONNX Runtime; ``--engine openvino`` checks it in OpenVINO as well (fp32: parity with
eager; int8: top-1 agreement with the file in ONNX Runtime and with fp32).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from regzoo.deploy.engines_choice import ENGINE_CHOICES
from regzoo.deploy.export import DEFAULT_TOLERANCE, FORMATS, ONNX_MIN_OPSET, export_model, require_onnx
from regzoo.deploy.quantize import BACKENDS, DEFAULT_CALIBRATION_IMAGES
from regzoo.utils.extras import MissingExtraError
from regzoo.utils.files import unwritable_reason
from regzoo.utils.runtime import ArgumentParser, error_exit, run_cli

PROG = 'python -m regzoo.export'
DEFAULT_MIN_AGREEMENT = 0.99  # ONNX int8 vs PyTorch int8 top-1: the same numbers, so only near-ties may differ


def main(argv: Sequence[str] | None = None) -> int:
    """Export; returns the exit code (1: parity worse than --tolerance, or int8 agreement below --min-agreement).
    Other errors raise (the command line turns expected ones into one line and exit code 2: ``run_cli``)."""
    parser = ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--model', required=True, help='architecture or arch.tag, e.g. regnety_032')
    parser.add_argument('--checkpoint', default=None, help='local weights (any format regzoo loads)')
    parser.add_argument('--pretrained', action='store_true', help="load the model's published weights")
    parser.add_argument('--num-classes', type=int, default=None, help='classifier size (0: pooled features out)')
    parser.add_argument('--format', default=None, choices=FORMATS, help='required, except with --int8 (ONNX)')
    parser.add_argument('--out', required=True, help='file to write')
    parser.add_argument('--input-size', type=int, default=None,
                        help='square input side used to trace and check (default 224; not with --int8)')
    parser.add_argument('--opset', type=int, default=18, help=f'ONNX opset (>= {ONNX_MIN_OPSET})')
    parser.add_argument('--dynamo', action='store_true', help='ONNX: use the torch.export-based exporter')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE, help='max |d| allowed vs eager')
    parser.add_argument('--engine', default=None, choices=ENGINE_CHOICES,
                        help='ONNX (--format onnx or --int8): the engine the written file is checked in: onnxruntime '
                             '(what the check uses by default) or openvino (checked there too)')
    int8 = parser.add_argument_group('int8 (ONNX QDQ)')
    int8.add_argument('--int8', action='store_true', help='quantize to int8 and write ONNX QDQ')
    int8.add_argument('--calibration-dir', default=None, metavar='DIR',
                      help='images to calibrate the int8 activations on (searched recursively)')
    int8.add_argument('--calibration-images', type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar='N',
                      help='calibrate on at most N images (default: %(default)s)')
    int8.add_argument('--check-dir', default=None, metavar='DIR',
                      help='images to measure top-1 agreement on (default: the calibration images; held-out '
                           'images say more)')
    int8.add_argument('--int8-backend', default='onednn', choices=BACKENDS,
                      help='how the PyTorch int8 model the file is compared with runs (default: %(default)s)')
    int8.add_argument('--activation-bits', default='auto', choices=('auto', '8', '7'),
                      help='8, or 7 (reduce range): CPUs without VNNI (int8 dot products) need 7, their int8 sums '
                           'overflow otherwise; auto: 7 exactly when this CPU has no VNNI (default: %(default)s)')
    int8.add_argument('--min-agreement', type=float, default=DEFAULT_MIN_AGREEMENT, metavar='F',
                      help='least top-1 agreement of the file with the PyTorch int8 model (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.opset < ONNX_MIN_OPSET:
        parser.error(f'--opset {args.opset} is invalid: must be >= {ONNX_MIN_OPSET}')
    if args.input_size is not None and args.input_size < 1:
        parser.error('--input-size must be >= 1')
    if args.int8:
        if args.format not in (None, 'onnx'):
            parser.error(f'--int8 writes ONNX QDQ: drop --format {args.format}')
        if args.calibration_dir is None:
            parser.error('--int8 needs --calibration-dir DIR: a folder of images like the ones the model will see')
        if args.input_size is not None:
            parser.error('--input-size does not apply to --int8: the int8 model takes the size of its calibration '
                         "images, the model's eval size")
        if args.calibration_images < 1:
            parser.error('--calibration-images must be >= 1')
        from regzoo.eval.predict import image_folder_problem
        for flag, folder in (('--calibration-dir', args.calibration_dir), ('--check-dir', args.check_dir)):
            reason = folder is not None and image_folder_problem(folder)
            if reason:
                return error_exit(parser.prog, f'{flag}: {reason}')
    else:
        for flag in ('calibration_dir', 'check_dir'):
            if getattr(args, flag) is not None:
                parser.error(f'--{flag.replace("_", "-")} needs --int8')
        if args.format is None:
            parser.error('--format is required (or --int8 for ONNX QDQ int8)')
    check_engine_arg(parser, args)
    reason = unwritable_reason(Path(args.out).parent)
    if reason:
        return error_exit(parser.prog, f'--out {args.out}: cannot write there: {reason}')
    try:
        if args.engine == 'openvino':
            from regzoo.deploy.engines_choice import require_engine
            require_engine('openvino', int8=args.int8)
        if args.int8:
            from regzoo.deploy.quantize import require_torchao
            require_torchao()
            require_onnx(dynamo=True)
        elif args.format == 'onnx':
            require_onnx(args.dynamo)  # before building (and maybe downloading) the model
        from regzoo.zoo.builder import create_model
        model = create_model(
            args.model, pretrained=args.pretrained, num_classes=args.num_classes, checkpoint_path=args.checkpoint)
        if args.int8:
            from regzoo.deploy.export import export_int8
            report = export_int8(model, args.out, args.calibration_dir, check_images=args.check_dir,
                                 backend=args.int8_backend, opset=args.opset, max_images=args.calibration_images,
                                 reduce_range=None if args.activation_bits == 'auto' else args.activation_bits == '7')
            print(report.summary(args.min_agreement))
            ok = report.ok(args.min_agreement)
            if args.engine == 'openvino':
                ok &= check_int8_in_openvino(model, report, args, args.check_dir or args.calibration_dir)
            return 0 if ok else 1
        size = args.input_size or 224
        report = export_model(
            model, args.out, args.format, (model.in_chans, size, size), args.opset, args.dynamo)
    except MissingExtraError as e:
        return error_exit(parser.prog, e)
    print(report.summary(args.tolerance))
    ok = report.ok(args.tolerance)
    if args.engine == 'openvino':
        ok &= check_fp32_in_openvino(model, report, args.tolerance)
    return 0 if ok else 1


def check_engine_arg(parser: ArgumentParser, args) -> None:
    """--engine names where an ONNX file is checked: onnxruntime (always) or openvino (as well)."""
    if args.engine in (None, 'torch'):
        return
    if args.engine == 'auto':
        parser.error("--engine auto picks an engine when the model runs; a written file is checked in a named one: "
                     '--engine onnxruntime or --engine openvino')
    if not (args.int8 or args.format == 'onnx'):
        parser.error(f'--engine {args.engine} checks an ONNX file: add --format onnx (or --int8), or drop --engine')


def check_fp32_in_openvino(model, report, tolerance: float) -> bool:
    """The written fp32 ONNX file run by OpenVINO against eager PyTorch, at the batch sizes of ``report``."""
    import torch

    from regzoo.deploy.engines import check_onnx_file
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(b, *report.input_size, generator=gen) for b in report.batch_sizes]
    worst, _ = check_onnx_file(report.path, 'openvino', {'eager': model.eval()}, inputs)['eager']
    ok = worst <= tolerance
    print(f'openvino: parity vs eager at batch {list(report.batch_sizes)}: max|d| = {worst:.3g} '
          f'(tolerance {tolerance:g}) {"OK" if ok else "FAILED"}')
    return ok


def check_int8_in_openvino(model, report, args, images: str) -> bool:
    """The written int8 ONNX file run by OpenVINO: top-1 agreement with the same file in ONNX Runtime (which the
    report compared with PyTorch int8) and with fp32, on the images the report used."""
    from regzoo.deploy.engines import check_onnx_file, onnx_runner_for
    from regzoo.deploy.quantize import calibration_batches
    from regzoo.eval.transform import eval_transform
    batches = list(calibration_batches(images, eval_transform(model), max_images=None))
    ort = onnx_runner_for('onnxruntime', report.path, tuple(batches[0].shape))
    found = check_onnx_file(report.path, 'openvino', {'onnxruntime': ort, 'fp32': model.eval()}, batches)
    ok = found['onnxruntime'][1] >= args.min_agreement
    print(f'  OpenVINO int8 vs ONNX Runtime int8 (the same file): {found["onnxruntime"][1]:.2%} (max|d| logits '
          f'{found["onnxruntime"][0]:.3g}; at least {args.min_agreement:.2%} required) {"OK" if ok else "FAILED"}')
    print(f'  OpenVINO int8 vs fp32: {found["fp32"][1]:.2%}')
    return ok


def run(argv: Sequence[str] | None = None) -> int:
    """The command (``python -m regzoo.export``, ``regzoo-export``): ``main`` with one-line errors."""
    return run_cli(main, PROG, argv)


if __name__ == '__main__':
    sys.exit(run())
