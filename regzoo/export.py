"""Command line of the exporter: ``python -m regzoo.export --model NAME --format {onnx,pt2,torchscript} --out FILE``.

    python -m regzoo.export --model regnety_032 --format onnx --out regnety_032.onnx
    python -m regzoo.export --model regnetx_002 --checkpoint ft.safetensors --format pt2 --out x002.pt2

The export itself (and its parity check against eager PyTorch) is ``regzoo.deploy.export``.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from regzoo.deploy.export import DEFAULT_TOLERANCE, FORMATS, ONNX_MIN_OPSET, export_model, require_onnx
from regzoo.utils.extras import MissingExtraError
from regzoo.utils.files import unwritable_reason
from regzoo.utils.runtime import ArgumentParser, error_exit, run_cli

PROG = 'python -m regzoo.export'


def main(argv: Sequence[str] | None = None) -> int:
    """Export; returns the exit code (1: parity worse than --tolerance). Other errors raise (the command line turns
    expected ones into one line and exit code 2: ``run_cli``)."""
    parser = ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--model', required=True, help='architecture or arch.tag, e.g. regnety_032')
    parser.add_argument('--checkpoint', default=None, help='local weights (any format regzoo loads)')
    parser.add_argument('--pretrained', action='store_true', help="load the model's published weights")
    parser.add_argument('--num-classes', type=int, default=None, help='classifier size (0: pooled features out)')
    parser.add_argument('--format', required=True, choices=FORMATS)
    parser.add_argument('--out', required=True, help='file to write')
    parser.add_argument('--input-size', type=int, default=224, help='square input side used to trace and check')
    parser.add_argument('--opset', type=int, default=18, help=f'ONNX opset (>= {ONNX_MIN_OPSET})')
    parser.add_argument('--dynamo', action='store_true', help='ONNX: use the torch.export-based exporter')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE, help='max |d| allowed vs eager')
    args = parser.parse_args(argv)
    if args.opset < ONNX_MIN_OPSET:
        parser.error(f'--opset {args.opset} is invalid: must be >= {ONNX_MIN_OPSET}')
    if args.input_size < 1:
        parser.error('--input-size must be >= 1')
    reason = unwritable_reason(Path(args.out).parent)
    if reason:
        return error_exit(parser.prog, f'--out {args.out}: cannot write there: {reason}')
    try:
        if args.format == 'onnx':
            require_onnx(args.dynamo)  # before building (and maybe downloading) the model
        from regzoo.zoo.builder import create_model
        model = create_model(
            args.model, pretrained=args.pretrained, num_classes=args.num_classes, checkpoint_path=args.checkpoint)
        report = export_model(
            model, args.out, args.format, (model.in_chans, args.input_size, args.input_size), args.opset, args.dynamo)
    except MissingExtraError as e:
        return error_exit(parser.prog, e)
    print(report.summary(args.tolerance))
    return 0 if report.ok(args.tolerance) else 1


if __name__ == '__main__':
    sys.exit(run_cli(main, PROG))
