"""Export a model to TorchScript, torch.export (.pt2) or ONNX, then check the file against eager PyTorch.

Every export is re-loaded from disk and run at batch sizes other than the one it was traced with,
so a batch size baked into the graph shows up as an error, not as a silently fixed-batch file.
Files are written atomically: an interrupted export leaves the previous file, never half of one.

    python -m regzoo.export --model regnety_032 --format onnx --out regnety_032.onnx
    python -m regzoo.export --model regnetx_002 --checkpoint ft.safetensors --format pt2 --out x002.pt2
    python -m regzoo.export --model regnetx_002 --checkpoint ft.safetensors --int8 --calibration-dir calib/ \
        --out x002-int8.onnx

The int8 export (``export_int8``) writes the ``regzoo.quantize`` model as ONNX QDQ (QuantizeLinear /
DequantizeLinear around float ops, int8 per-channel weight initializers) and reports, on images, how often its
top-1 class agrees with the PyTorch int8 model and with the fp32 model.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from regzoo.deploy.quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    CalibrationImages,
    QuantizedModel,
    calibration_batches,
    quantize_pt2e,
)
from regzoo.eval.loop import top1_matches
from regzoo.eval.transform import eval_transform
from regzoo.utils.extras import require
from regzoo.utils.files import atomic_write

FORMATS = ('onnx', 'pt2', 'torchscript')
ONNX_MIN_OPSET = 17
ONNX_INLINE_BYTES = 2 ** 31 - 2 ** 28  # protobuf caps one file at 2 GiB; headroom for the graph itself
DEFAULT_TOLERANCE = 1e-4  # fp32 max |delta| against eager
Runner = Callable[[torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    input_size: tuple[int, int, int]
    batch_sizes: tuple[int, ...]   # batch sizes the re-loaded file was run at
    max_abs_diff: float            # over every output and batch size

    def ok(self, tolerance: float = DEFAULT_TOLERANCE) -> bool:
        return self.max_abs_diff <= tolerance

    def summary(self, tolerance: float = DEFAULT_TOLERANCE) -> str:
        size_mb = self.path.stat().st_size / 2 ** 20
        return (f'wrote {self.path} ({self.format}, {size_mb:.1f} MiB); parity vs eager at batch '
                f'{list(self.batch_sizes)} x {"x".join(map(str, self.input_size))}: max|d| = {self.max_abs_diff:.3g} '
                f'(tolerance {tolerance:g}) {"OK" if self.ok(tolerance) else "FAILED"}')


def _as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    with torch.no_grad():
        outs = _as_list(model(example))
    return ['output'] if len(outs) == 1 else [f'feature{i}' for i in range(len(outs))]


# torch's message for each deprecated jit call: '`torch.jit.script` is deprecated. Please switch to ...'
JIT_DEPRECATION = r'`torch\.jit\.\w+` is deprecated'


def export_torchscript(model: nn.Module, path: str | Path) -> Runner:
    """``torch.jit.script`` (not trace: no shape is frozen), saved with ``torch.jit.save``; returns the reloaded one."""
    with warnings.catch_warnings():
        # torch deprecates TorchScript (a FutureWarning per jit call: three per export); regzoo still offers it as
        # an export format for the runtimes that load it, so these exact warnings are not news to its user
        warnings.filterwarnings('ignore', message=JIT_DEPRECATION, category=FutureWarning)
        scripted = torch.jit.script(model)
        atomic_write(path, lambda tmp: torch.jit.save(scripted, str(tmp)))
        loaded = torch.jit.load(str(path))
    return lambda x: _as_list(loaded(x))


def export_pt2(model: nn.Module, path: str | Path, example: torch.Tensor) -> Runner:
    """``torch.export.export`` with a dynamic batch dimension, saved with ``torch.export.save``."""
    batch = torch.export.Dim('batch', min=1, max=4096)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    atomic_write(path, lambda tmp: torch.export.save(program, str(tmp)))
    loaded = torch.export.load(str(path)).module()
    return lambda x: _as_list(loaded(x))


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s tensors: parameters, buffers and a graph's constant attributes (its weights)."""
    tensors = {id(t): t for t in module.state_dict(keep_vars=True).values()}
    if isinstance(module, torch.fx.GraphModule):
        for node in module.graph.nodes:
            value = getattr(module, node.target, None) if node.op == 'get_attr' else None
            if isinstance(value, torch.Tensor):
                tensors[id(value)] = value
    return sum(t.numel() * t.element_size() for t in tensors.values())


def write_onnx_atomically(path: str | Path, export: Callable[[Path, bool], object], nbytes: int) -> None:
    """``export(target, external_data)`` writes an ONNX file at ``target``; this puts it at ``path`` atomically.

    Below protobuf's 2 GiB the weights go inside the one file, renamed into place. Above it they must go to an
    external data file whose name the .onnx file records (``<name>.data``), so both are written with their final
    names into a temp folder next to ``path``, then moved: the data first, the .onnx last.
    """
    path = Path(path)
    if nbytes < ONNX_INLINE_BYTES:
        atomic_write(path, lambda tmp: export(tmp, False))
        return
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f'.{path.name}.') as tmp:
        export(Path(tmp) / path.name, True)
        for f in sorted(Path(tmp).iterdir(), key=lambda f: f.name == path.name):
            os.replace(f, path.parent / f.name)


def require_onnx(dynamo: bool = False):
    """The ``[export]`` extra an ONNX export needs (onnx, onnxruntime; onnxscript for ``dynamo``): onnxruntime.

    Raises ``MissingExtraError`` naming ``pip install 'regzoo[export]'`` when one is missing.
    """
    require('onnx', 'export', 'ONNX export')
    if dynamo:
        require('onnxscript', 'export', 'ONNX export with dynamo=True')
    return require('onnxruntime', 'export', 'checking an ONNX export')


def export_onnx(
        model: nn.Module, path: str | Path, example: torch.Tensor, opset: int = 18, dynamo: bool = False,
) -> Runner:
    """ONNX with a dynamic batch axis; returns an onnxruntime (CPU) runner of the written file.

    ``dynamo=False`` uses the TorchScript-based exporter: on torch 2.14 it writes the same numbers
    (parity checked either way) about 4x faster than the torch.export-based one (``dynamo=True``).
    """
    ort = require_onnx(dynamo)
    write_onnx(model, path, example, opset, dynamo)
    return onnx_runner(ort, path)


def write_onnx(model: nn.Module, path: str | Path, example: torch.Tensor, opset: int = 18,
               dynamo: bool = False) -> None:
    """``export_onnx``'s writing half (no runtime, no check): the ONNX file of ``model`` with a dynamic batch axis."""
    if opset < ONNX_MIN_OPSET:
        raise ValueError(f'opset={opset} is invalid: must be >= {ONNX_MIN_OPSET}')
    output_names = _output_names(model, example)
    if dynamo:
        batch = torch.export.Dim('batch', min=1, max=4096)
        write_onnx_atomically(path, lambda target, external: torch.onnx.export(
            model, (example,), str(target), opset_version=opset, dynamo=True, input_names=['input'],
            output_names=output_names, dynamic_shapes=({0: batch},), external_data=external, verbose=False),
            tensor_bytes(model))
    else:
        atomic_write(path, lambda tmp: torch.onnx.export(
            model, (example,), str(tmp), opset_version=opset, dynamo=False, input_names=['input'],
            output_names=output_names, dynamic_axes={n: {0: 'batch'} for n in ['input', *output_names]}))


def onnx_runner(ort, path: str | Path, threads: int | None = None) -> Runner:
    """An onnxruntime CPU session of ``path`` as a Runner (``threads``: intra-op threads, default ort's)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    input_name = session.get_inputs()[0].name
    return lambda x: [torch.from_numpy(o) for o in session.run(None, {input_name: x.numpy()})]


def max_abs_diff(model: nn.Module, runner: Runner, inputs: Sequence[torch.Tensor]) -> float:
    """Largest |eager - exported| over every output of every input."""
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            expected, got = _as_list(model(x)), runner(x)
            if len(expected) != len(got):
                raise AssertionError(f'the export returns {len(got)} outputs, eager {len(expected)}')
            for e, g in zip(expected, got):
                if e.shape != g.shape:
                    raise AssertionError(f'output shape {tuple(g.shape)} != eager {tuple(e.shape)}')
                worst = max(worst, (e - g).abs().max().item())
    return worst


def export_model(
        model: nn.Module, path: str | Path, fmt: str, input_size: tuple[int, int, int] = (3, 224, 224),
        opset: int = 18, dynamo: bool = False, check_batch_sizes: Sequence[int] = (1, 3), seed: int = 0,
) -> ExportReport:
    """Export ``model`` (put in eval mode) to ``path`` and measure its parity with eager on random inputs.

    The export is traced at batch 2 and checked at ``check_batch_sizes``.
    """
    if fmt not in FORMATS:
        raise ValueError(f'format {fmt!r} is invalid: must be one of {FORMATS}')
    model = model.eval()
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(2, *input_size, generator=gen)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == 'torchscript':
        runner = export_torchscript(model, path)
    elif fmt == 'pt2':
        runner = export_pt2(model, path, example)
    else:
        runner = export_onnx(model, path, example, opset=opset, dynamo=dynamo)
    inputs = [torch.randn(b, *input_size, generator=gen) for b in check_batch_sizes]
    return ExportReport(path, fmt, tuple(input_size), tuple(check_batch_sizes), max_abs_diff(model, runner, inputs))


def export_int8_onnx(qmodel: QuantizedModel, path: str | Path, opset: int = 18) -> Runner:
    """Write ``qmodel``'s quantized graph as ONNX QDQ (dynamic batch, the calibration images' C x H x W);
    returns an onnxruntime runner of the written file.

    The torch.export-based exporter translates the graph's quantize/dequantize ops to QuantizeLinear /
    DequantizeLinear: int8 weight initializers with per-output-channel scales (axis 0), uint8 activations.
    onnxruntime fuses each DequantizeLinear -> Conv -> QuantizeLinear into an integer conv.
    """
    ort = require_onnx(dynamo=True)
    write_int8_onnx(qmodel, path, opset)
    return onnx_runner(ort, path)


def write_int8_onnx(qmodel: QuantizedModel, path: str | Path, opset: int = 18) -> None:
    """``export_int8_onnx``'s writing half (no runtime): ``qmodel``'s quantized graph as an ONNX QDQ file."""
    if opset < ONNX_MIN_OPSET:
        raise ValueError(f'opset={opset} is invalid: must be >= {ONNX_MIN_OPSET}')
    example = torch.zeros(2, *qmodel.input_size)
    batch = torch.export.Dim('batch', min=1, max=4096)
    program = torch.export.export(qmodel.graph, (example,), dynamic_shapes=({0: batch},), strict=False)
    write_onnx_atomically(path, lambda target, external: torch.onnx.export(
        program, (example,), str(target), opset_version=opset, dynamo=True, input_names=['input'],
        output_names=['output'], external_data=external, verbose=False), tensor_bytes(qmodel.graph))


@dataclass(frozen=True)
class Int8ExportReport:
    """An int8 ONNX export and how its top-1 classes agree with the PyTorch int8 and fp32 models on ``images``."""
    path: Path
    backend: str                   # the PyTorch int8 model's
    input_size: tuple[int, int, int]
    calibration_images: int
    activation_bits: int           # 8, or 7 (reduce_range) for CPUs without VNNI
    images: int                    # the images agreement was measured on
    images_source: str             # where they came from
    onnx_vs_int8: float            # top-1 agreement, fraction of ``images``
    int8_vs_fp32: float
    onnx_vs_fp32: float
    max_abs_diff: float            # ONNX vs PyTorch int8 logits

    def ok(self, min_agreement: float) -> bool:
        return self.onnx_vs_int8 >= min_agreement

    def summary(self, min_agreement: float) -> str:
        size_mb = self.path.stat().st_size / 2 ** 20
        return '\n'.join([
            f'wrote {self.path} (ONNX QDQ int8, {size_mb:.1f} MiB, input N x {"x".join(map(str, self.input_size))}; '
            f'calibrated on {self.calibration_images} images; {self.activation_bits}-bit activations)',
            f'top-1 agreement on {self.images} images ({self.images_source}):',
            f'  ONNX int8 vs PyTorch int8 ({self.backend}): {self.onnx_vs_int8:.2%} (max|d| logits '
            f'{self.max_abs_diff:.3g}; at least {min_agreement:.2%} required) '
            f'{"OK" if self.ok(min_agreement) else "FAILED"}',
            f'  PyTorch int8 vs fp32: {self.int8_vs_fp32:.2%}',
            f'  ONNX int8 vs fp32: {self.onnx_vs_fp32:.2%}',
        ])


def export_int8(
        model: nn.Module, path: str | Path, calibration_images: CalibrationImages, *,
        check_images: CalibrationImages | None = None, backend: str = 'onednn', opset: int = 18,
        max_images: int | None = DEFAULT_CALIBRATION_IMAGES, transform: Callable | None = None,
        reduce_range: bool | None = None,
) -> Int8ExportReport:
    """``regzoo.quantize`` ``model`` on ``calibration_images``, write the int8 model to ``path`` as ONNX QDQ, and
    measure top-1 agreement (ONNX vs PyTorch int8 vs fp32) on ``check_images`` (default: the calibration images;
    held-out images say more). Image folders are read with ``transform``, default the model's eval transform.
    ``reduce_range``: see ``regzoo.quantize`` (None: 7-bit activations exactly when this CPU has no VNNI)."""
    require_onnx(dynamo=True)  # before calibrating: a missing extra should not cost a calibration first
    if not getattr(model, 'num_classes', 1):
        raise ValueError('the int8 export measures top-1 agreement: build the model with its classifier '
                         '(num_classes > 0)')
    model = model.eval()
    if transform is None and any(isinstance(s, (str, os.PathLike)) for s in (calibration_images, check_images)):
        transform = eval_transform(model)
    qmodel = quantize_pt2e(model, calibration_images, backend, max_images=max_images, transform=transform,
                           reduce_range=reduce_range)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    runner = export_int8_onnx(qmodel, path, opset)
    source = calibration_images if check_images is None else check_images
    n = same_onnx = same_int8 = same_onnx_fp32 = 0
    worst = 0.0
    with torch.no_grad():
        for x in calibration_batches(source, transform, max_images=None):
            fp32, int8, onnx = model(x), qmodel(x), runner(x)[0]
            n += len(x)
            same_onnx += top1_matches(onnx, int8)
            same_int8 += top1_matches(int8, fp32)
            same_onnx_fp32 += top1_matches(onnx, fp32)
            worst = max(worst, (onnx - int8).abs().max().item())
    if n == 0:  # e.g. a one-shot iterator, used up by the calibration
        raise ValueError('no images to measure the agreement on: pass check_images (a folder, tensor or loader)')
    described = 'the calibration images' if check_images is None else (
        str(check_images) if isinstance(check_images, (str, os.PathLike)) else 'the images given')
    return Int8ExportReport(path, backend, qmodel.input_size, qmodel.calibration_images, qmodel.activation_bits, n,
                            described,
                            same_onnx / n, same_int8 / n, same_onnx_fp32 / n, worst)
