"""Peak memory of loading a checkpoint: plain ``model.safetensors`` against sharded checkpoints in both HF index forms.

    python benchmarks/load_memory.py                              # regnety_080 (156 MB of fp32), 4 shards
    python benchmarks/load_memory.py --arch regnety_040 --shards 3 --json

The model (random weights, BN statistics randomised) is saved three ways in the HF layout: one
``model.safetensors`` (``save_pretrained``), ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``
(``save_pretrained(max_shard_size=...)``) and ``pytorch_model-0000k-of-0000n.bin`` + ``pytorch_model.bin.index.json``
(as older transformers wrote them: huggingface_hub's split, ``torch.save`` per shard). Each is loaded with
``regzoo.create_model(arch, checkpoint_path=DIR)`` in a fresh process; the plain one once more as loads ran before
models were built on the meta device (into a model built first: ``regzoo.load_checkpoint``).

Measured: the peak resident memory of the load above the memory before it. ``/proc/self/clear_refs`` resets
the high-water mark (VmHWM) after ``import torch, regzoo`` and a warm-up that does the lazy imports a load does
(a meta-device build); the load runs; VmHWM less the resident size before it is the load's peak. Reported per
form: that peak over the weights' size (a sharded load reads shard by shard into a model built on the meta
device: about the weights plus one tensor for safetensors shards, plus one shard for .bin shards), the load
time (seconds; for scale only) and whether the logits equal the saved model's.
Linux only (``/proc``).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMS = ('plain', 'safetensors-shards', 'bin-shards')
# plain again, loaded as before models were built on the meta device: into a model built (and randomly initialised)
# first, with regzoo.load_checkpoint, which copies into its parameters
BUILT_FIRST = 'plain-into-built'


def _status(field: str) -> int:
    """A /proc/self/status size field (VmRSS, VmHWM) in bytes."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'no {field} in /proc/self/status: this benchmark needs Linux')


def measure(arch: str, folder: str, built_first: bool = False) -> dict:
    """Run in a fresh process: the peak resident memory of loading ``folder``, above the memory before it."""
    import safetensors.torch  # noqa: F401 - imported by the load; not its memory
    import timm.data  # noqa: F401 - the eval transform of an HF folder's preprocessor_config.json: not its memory
    import torch

    import regzoo
    regzoo.create_model(arch, device='meta')  # the lazy imports of a meta-device build
    with open('/proc/self/clear_refs', 'w') as f:  # reset VmHWM to the current resident size
        f.write('5')
    before = _status('VmRSS')
    start = time.perf_counter()
    if built_first:
        model = regzoo.create_model(arch)
        regzoo.load_checkpoint(model, folder)
    else:
        model = regzoo.create_model(arch, checkpoint_path=folder)
    model.eval()
    seconds = time.perf_counter() - start
    peak = _status('VmHWM') - before
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    return dict(peak_bytes=peak, seconds=seconds, logits=logits[0].tolist())


def write_bin_shards(tensors: dict, out: Path, max_shard_size: int) -> int:
    """``pytorch_model-0000k-of-0000n.bin`` + ``pytorch_model.bin.index.json`` as transformers wrote them."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    split = split_torch_state_dict_into_shards(tensors, filename_pattern='pytorch_model{suffix}.bin',
                                               max_shard_size=max_shard_size)
    for name, names in split.filename_to_tensors.items():
        torch.save({k: tensors[k] for k in names}, out / name)
    index = {'metadata': split.metadata, 'weight_map': split.tensor_to_filename}
    (out / 'pytorch_model.bin.index.json').write_text(json.dumps(index, indent=2))
    return len(split.filename_to_tensors)


def save_forms(arch: str, shards: int, root: Path) -> tuple[dict[str, Path], int, dict[str, int], list[float]]:
    """The model saved in each form under ``root``: (form -> folder, weights bytes, form -> shard count, logits)."""
    import torch

    import regzoo
    from regzoo.models.layers import randomize_bn
    from regzoo.zoo.convert import hf
    torch.manual_seed(0)
    model = randomize_bn(regzoo.create_model(arch)).eval()
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    limit = math.ceil(size / shards)
    folders = {form: root / form for form in FORMS}
    regzoo.save_pretrained(model, folders['plain'], format='hf', card=False)
    regzoo.save_pretrained(model, folders['safetensors-shards'], format='hf', card=False, max_shard_size=limit)
    folders['bin-shards'].mkdir()
    (folders['bin-shards'] / 'config.json').write_text((folders['plain'] / 'config.json').read_text())
    tensors = hf.from_regzoo({k: v.contiguous() for k, v in model.state_dict().items()}, se=bool(model.cfg.se_ratio))
    counts = {'plain': 1, 'bin-shards': write_bin_shards(tensors, folders['bin-shards'], limit),
              'safetensors-shards': len(list(folders['safetensors-shards'].glob('model-*.safetensors')))}
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))[0].tolist()
    return folders, size, counts, logits


def run(arch: str, shards: int, root: Path, forms: tuple[str, ...] = FORMS + (BUILT_FIRST,)) -> list[dict]:
    """Save, then load each of ``forms`` in its own process; one result row per form."""
    folders, size, counts, reference = save_forms(arch, shards, root)
    rows = []
    for form in forms:
        folder = folders.get(form, folders['plain'])
        out = subprocess.run([sys.executable, __file__, '--measure', str(folder), '--arch', arch]
                             + (['--built-first'] if form == BUILT_FIRST else []),
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(dict(form=form, shards=counts.get(form, 1), weights_mb=size / 1e6,
                         peak_mb=result['peak_bytes'] / 1e6,
                         ratio=result['peak_bytes'] / size, seconds=result['seconds'],
                         logits_equal=result['logits'] == reference))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='regnety_080')
    parser.add_argument('--shards', type=int, default=4, help='shards the weights are split into (about)')
    parser.add_argument('--forms', nargs='+', choices=FORMS + (BUILT_FIRST,), default=FORMS + (BUILT_FIRST,),
                        help='the loads to measure (default: all)')
    parser.add_argument('--json', action='store_true', help='print the rows as JSON')
    parser.add_argument('--measure', metavar='DIR', help=argparse.SUPPRESS)  # the child process
    parser.add_argument('--built-first', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.arch, args.measure, args.built_first)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.arch, args.shards, Path(tmp), tuple(args.forms))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f'{args.arch}: {rows[0]["weights_mb"]:.1f} MB of weights; peak resident memory of the load above the '
          'memory before it')
    print(f'{"form":<20} {"shards":>6} {"peak MB":>9} {"x weights":>9} {"load s":>7}  logits equal')
    for r in rows:
        print(f'{r["form"]:<20} {r["shards"]:>6} {r["peak_mb"]:>9.1f} {r["ratio"]:>9.2f} {r["seconds"]:>7.2f}  '
              f'{r["logits_equal"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
