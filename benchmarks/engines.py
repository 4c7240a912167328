#!/usr/bin/env python3
"""Inference engines side by side, in one process: is ``optimize_for_inference(engine='auto')`` as fast as a user's
own ONNX Runtime session? (issue 22's "done when": auto >= 0.95x a plain default ONNX Runtime session.)

Rows, per model and batch size, all on the same random weights (BN statistics randomised):

- ``timm eager``: ``timm.create_model`` with the weights loaded, plain eval forward under no_grad;
- ``regzoo torch``: ``optimize_for_inference(engine='torch')`` (fused oneDNN convs);
- ``regzoo onnxruntime`` / ``regzoo openvino``: ``optimize_for_inference(engine=...)`` (the session settings in
  ``regzoo/deploy/engines_runtime.py``);
- ``regzoo auto``: ``optimize_for_inference(engine='auto')``, timed on the batch it serves; its pick is printed;
- ``plain onnxruntime``: independent of regzoo: ``torch.onnx.export`` of the *timm* model with default arguments
  (a fixed batch size), run by ``onnxruntime.InferenceSession`` with default options except ``intra_op_num_threads``
  (the same thread count as every other row).

Timing: freed memory retained (``regzoo.utils.machine.retain_freed_memory``, the regime a deployment runs in),
``--threads`` threads, interleaved rounds with the order rotating, each timed call after 0.1 s of untimed calls of
the same row (``regzoo.deploy.engines_choice.median_ms``: another engine's thread pool may still be spinning; on 2
cores that made ONNX Runtime 3x slower at batch 1), medians. Every row's
logits are checked against timm's (max |d| / max |logit| <= 1e-3).

    python benchmarks/engines.py                       # regnetx_002, regnety_032 at 224 px, batch 32 and 1
    python benchmarks/engines.py --quick               # a smoke run: regnetx_002, 64 px, batch 4 and 1, 2 rounds

Run it on a quiet machine: other processes' load shows up as spread between runs.
"""
from __future__ import annotations

import argparse
import sys
import logging
import tempfile
from pathlib import Path

import torch

import regzoo
from regzoo.deploy.engines import PARITY_RTOL, relative_error
from regzoo.deploy.engines_choice import median_ms
from regzoo.models.layers import randomize_bn
from regzoo.utils.machine import describe_machine, machine_lines, retain_freed_memory

AUTO, PLAIN_ORT, TIMM = 'regzoo auto', 'plain onnxruntime', 'timm eager'
ROWS = {'timm': TIMM, 'torch': 'regzoo torch', 'onnxruntime': 'regzoo onnxruntime', 'openvino': 'regzoo openvino',
        'auto': AUTO, 'plain': PLAIN_ORT}


def plain_onnxruntime(model: torch.nn.Module, x: torch.Tensor, folder: Path, threads: int):
    """What a user would write: a default export and a default session (threads set like every other row)."""
    import onnxruntime as ort
    path = folder / f'plain-{len(x)}.onnx'
    torch.onnx.export(model, (x,), str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda t: torch.from_numpy(session.run(None, {name: t.numpy()})[0])


def rows_for(name: str, batch: int, args, folder: Path) -> list[dict]:
    import timm
    torch.manual_seed(0)
    ours = randomize_bn(regzoo.create_model(name)).eval()
    theirs = timm.create_model(name, pretrained=False).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(batch, 3, args.img_size, args.img_size)
    builders = {TIMM: lambda: theirs, AUTO: lambda: regzoo.optimize_for_inference(ours, engine='auto', example_input=x),
                PLAIN_ORT: lambda: plain_onnxruntime(theirs, x, folder, args.threads)}
    for engine in ('torch', 'onnxruntime', 'openvino'):
        builders[f'regzoo {engine}'] = lambda e=engine: regzoo.optimize_for_inference(ours, engine=e, example_input=x)
    rows = {ROWS[k]: builders[ROWS[k]]() for k in args.rows.split(',')}
    with torch.no_grad():
        expected = theirs(x)
        errors = {k: relative_error(m(x), expected) for k, m in rows.items()}
    ms = median_ms(rows, x, args.repeats)
    fastest = min(ms.values())
    out = []
    for k, v in ms.items():
        out.append(dict(model=name, batch=batch, row=k, img_per_s=batch / v * 1e3, vs_timm=ms[TIMM] / v,
                        vs_fastest=fastest / v, rel_err=errors[k],
                        note=rows[AUTO].engine_choice.engine if k == AUTO else ''))
    if AUTO in ms and PLAIN_ORT in ms:
        out.append(dict(model=name, batch=batch, row='auto / plain onnxruntime', ratio=ms[PLAIN_ORT] / ms[AUTO]))
    return out


def table(rows: list[dict]) -> list[str]:
    lines = ['| model | batch | row | img/s | vs timm eager | vs fastest | max rel err | note |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        if 'ratio' in r:
            goal = 'OK' if r['ratio'] >= 0.95 else 'BELOW GOAL'
            lines.append(f"| {r['model']} | {r['batch']} | **{r['row']}** | | **{r['ratio']:.2f}x** | | | "
                         f"goal >= 0.95: {goal} |")
            continue
        bad = '' if r['rel_err'] <= PARITY_RTOL else ' PARITY FAILED'
        note = f"picked {r['note']}" if r['note'] else ''
        lines.append(f"| {r['model']} | {r['batch']} | {r['row']} | {r['img_per_s']:.1f} | {r['vs_timm']:.2f}x | "
                     f"{r['vs_fastest']:.2f}x | {r['rel_err']:.1e}{bad} | {note} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', default='regnetx_002,regnety_032')
    p.add_argument('--batch-sizes', default='32,1')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeats', type=int, default=20, help='timed rounds (medians)')
    p.add_argument('--rows', default=','.join(ROWS),
                   help=f'rows to build and time, of {",".join(ROWS)} (timm is always kept: the reference); fewer '
                        'rows show whether engines slow each other down in one process')
    p.add_argument('--quick', action='store_true', help='smoke run: regnetx_002, 64 px, batch 4 and 1, 2 rounds')
    args = p.parse_args(argv)
    unknown = set(args.rows.split(',')) - set(ROWS)
    if unknown:
        p.error(f'--rows: unknown {sorted(unknown)}; choose from {",".join(ROWS)}')
    if 'timm' not in args.rows.split(','):
        args.rows = 'timm,' + args.rows
    if args.quick:
        args.models, args.batch_sizes, args.img_size, args.repeats = 'regnetx_002', '4,1', 64, 2
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    retained = retain_freed_memory()
    import onnxruntime
    import openvino
    print('\n'.join(f'- {line}' for line in machine_lines(
        describe_machine(), allocator='glibc, freed memory retained' if retained else 'default')))
    print(f'- onnxruntime {onnxruntime.__version__}; openvino {openvino.__version__}')
    print(f'- {args.img_size} px, {args.repeats} interleaved rounds, medians\n')
    rows = []
    with tempfile.TemporaryDirectory(prefix='regzoo-engines-') as folder:
        for name in args.models.split(','):
            for batch in map(int, args.batch_sizes.split(',')):
                rows += rows_for(name, batch, args, Path(folder))
    print('\n'.join(table(rows)))
    print('\ncommand: python benchmarks/engines.py ' + ' '.join(sys.argv[1:] if argv is None else argv))


if __name__ == '__main__':
    main()
