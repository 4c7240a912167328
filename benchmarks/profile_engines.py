#!/usr/bin/env python3
"""Where each engine spends a forward pass: regzoo's torch path (fused oneDNN convs) against ONNX Runtime (MLAS).

Issue 22, item 6: why ONNX Runtime's kernels beat the oneDNN path on some CPUs and batch sizes. For one model and
batch size, each engine runs ``--iters`` profiled forward passes after warm-up; the script prints, per engine,
the wall time per pass and the time in its kernels grouped by kind:

- conv kinds by kernel and groups: ``conv 1x1`` (the bottlenecks' pointwise convs), ``conv 3x3 grouped``
  (RegNet's group conv), ``conv 3x3 dense`` (the stem), ``conv 1x1 strided`` (shortcut projections);
- everything else by op (ONNX Runtime's node op types, including its layout reorders ``ReorderInput`` /
  ``ReorderOutput`` for the NCHWc blocked layout; torch's aten ops);
- ``outside kernels``: the wall time per pass less the kernels' time (Python, dispatch, framework overhead).

Sources: torch.profiler (``record_shapes``) for torch, ``SessionOptions.enable_profiling`` for ONNX Runtime; both
on ``torch.get_num_threads()`` threads with the settings ``regzoo.optimize_for_inference`` uses.

    python benchmarks/profile_engines.py --model regnetx_002 --batch-size 1
    python benchmarks/profile_engines.py --model regnety_032 --batch-size 32 --iters 5

Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import regzoo
from regzoo.models.layers import randomize_bn
from regzoo.utils.machine import describe_machine, machine_lines, retain_freed_memory


def conv_kind(weight_shape: list[int], in_channels: int) -> str:
    """'conv KxK grouped|dense' from a conv weight shape (O, I/groups, kh, kw) and the input's channel count."""
    _, per_group, kh, kw = weight_shape
    grouped = per_group < in_channels
    if kh == 1 and not grouped:
        return 'conv 1x1'
    return f'conv {kh}x{kw} {"grouped" if grouped else "dense"}'


def wall_ms(fn, x: torch.Tensor, iters: int) -> float:
    """Mean ms per call of ``fn(x)`` over ``iters`` calls after 5 warm-up calls (not profiled)."""
    for _ in range(5):
        fn(x)
    start = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return (time.perf_counter() - start) / iters * 1e3


def torch_profile(model, x: torch.Tensor, iters: int) -> tuple[float, dict[str, float]]:
    """Wall ms per pass and kernel ms per pass by kind, of regzoo's torch engine."""
    from torch.profiler import ProfilerActivity, profile
    fast = regzoo.optimize_for_inference(model, engine='torch', example_input=x)
    with torch.no_grad():
        wall = wall_ms(fast, x, iters)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            start = time.perf_counter()
            for _ in range(iters):
                fast(x)
            profiled = time.perf_counter() - start
    kinds: dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.cpu_parent is not None:
            continue  # top-level ops only: their time includes their children's
        shapes = [s for s in e.input_shapes or [] if len(s) == 4]
        if 'conv' in e.name and len(shapes) > 1:
            # (input, weight, ...) or, with a fused residual add, (input, residual, weight, ...)
            weight = shapes[2] if len(shapes) > 2 and shapes[1][0] == shapes[0][0] else shapes[1]
            kind = conv_kind(weight, shapes[0][1])
        else:
            kind = e.name
        kinds[kind] += e.cpu_time_total / 1e3 / iters
    kinds['(profiled wall)'] = profiled / iters * 1e3
    return wall, dict(kinds)


def ort_profile(model, x: torch.Tensor, iters: int, folder: Path) -> tuple[float, dict[str, float]]:
    """Wall ms per pass and kernel ms per pass by kind, of ONNX Runtime on regzoo's ONNX file."""
    import onnxruntime as ort
    from regzoo.deploy.engines_runtime import OnnxRuntimeRunner
    from regzoo.deploy.export import write_onnx
    path = folder / 'model.onnx'
    write_onnx(model, path, x[:2] if len(x) > 1 else torch.cat([x, x]))
    runner = OnnxRuntimeRunner(path, torch.get_num_threads())
    wall = wall_ms(runner, x, iters)
    options = ort.SessionOptions()  # the runner's options, plus profiling
    for key in ('graph_optimization_level', 'execution_mode', 'intra_op_num_threads', 'inter_op_num_threads'):
        setattr(options, key, getattr(runner.session.get_session_options(), key))
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / 'ort')
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: x.numpy()}
    for _ in range(5):
        session.run(None, feed)
    for _ in range(iters):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    trace_events = json.loads(trace.read_text())
    events = [e for e in trace_events if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time')]
    events = events[-len(events) * iters // (iters + 5):]  # the profiled passes, not the warm-up
    runs = [e['dur'] for e in trace_events if e.get('cat') == 'Session' and e['name'] == 'model_run'][-iters:]
    kinds: dict[str, float] = defaultdict(float)
    kinds['(profiled wall)'] = sum(runs) / 1e3 / iters
    for e in events:
        op = e['args'].get('op_name', '?')
        shapes = [next(iter(d.values())) for d in e['args'].get('input_type_shape', [])]
        if op in ('Conv', 'FusedConv') and len(shapes) > 1 and len(shapes[1]) == 4:
            c = shapes[0][1] * (shapes[0][4] if len(shapes[0]) == 5 else 1)  # NCHWc: blocks x block size
            kind = conv_kind(shapes[1], c)
        else:
            kind = op
        kinds[kind] += e['dur'] / 1e3 / iters
    return wall, dict(kinds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='regnetx_002')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--iters', type=int, default=20)
    args = p.parse_args()
    retained = retain_freed_memory()
    print('\n'.join(f'- {line}' for line in machine_lines(
        describe_machine(), allocator='glibc, freed memory retained' if retained else 'default')))
    torch.manual_seed(0)
    model = randomize_bn(regzoo.create_model(args.model)).eval()
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    with tempfile.TemporaryDirectory() as tmp:
        results = {'regzoo torch (oneDNN)': torch_profile(model, x, args.iters),
                   'ONNX Runtime (MLAS)': ort_profile(model, x, args.iters, Path(tmp))}
    names = list(results)
    kinds = sorted({k for _, ks in results.values() for k in ks},
                   key=lambda k: -max(results[n][1].get(k, 0.0) for n in names))
    print(f'\n{args.model}, batch {args.batch_size}, {args.img_size} px, {torch.get_num_threads()} threads, '
          f'ms per forward pass (profiled passes: {args.iters})\n')
    print('| | ' + ' | '.join(names) + ' |')
    print('|---|' + '---|' * len(names))
    print('| **wall (not profiled)** | ' + ' | '.join(f'**{results[n][0]:.2f}**' for n in names) + ' |')
    walls = {n: results[n][1].pop('(profiled wall)') for n in names}
    print('| wall while profiled | ' + ' | '.join(f'{walls[n]:.2f}' for n in names) + ' |')
    for k in kinds:
        if k != '(profiled wall)' and max(results[n][1].get(k, 0.0) for n in names) >= 0.01 * min(walls.values()):
            print(f'| {k} | ' + ' | '.join(f'{results[n][1].get(k, 0.0):.2f}' for n in names) + ' |')
    print('| outside kernels (profiled wall less kernels) | ' + ' | '.join(
        f'{walls[n] - sum(results[n][1].values()):.2f}' for n in names) + ' |')
    print(f'\ncommand: python benchmarks/profile_engines.py --model {args.model} --batch-size {args.batch_size} '
          f'--img-size {args.img_size} --iters {args.iters}')


if __name__ == '__main__':
    main()
