"""int8 post-training quantization: BN folded, per-channel int8 weights, uint8 activations calibrated on your images.

    qmodel = regzoo.quantize(model, 'calib_images/')          # a folder, a tensor, or a loader of image batches
    logits = qmodel(torch.randn(8, 3, 224, 224))               # NCHW float in, float logits out

The quantization stack is PyTorch 2 export (PT2E) quantization from torchao (``pip install 'regzoo[quantize]'``)
with its ``X86InductorQuantizer``: weights int8 symmetric per output channel, activations uint8 affine per tensor
(histogram calibration), convs and the classifier quantized, SE gates and pooling left in float. Every ``backend``
runs the same quantized numbers:

- ``'onednn'`` (default): the graph lowered to oneDNN int8 kernels (fused conv+bias+ReLU(+add) with prepacked
  int8 weights) by inductor's freezing passes; runs in eager PyTorch, so no C++ compiler is needed.
- ``'inductor'``: ``torch.compile`` of the graph (freezing on): also fuses the elementwise ops around the int8
  convs (RegNetY's SE: regnety_032 ran 1.7x faster than with 'onednn'); needs a C++ compiler, and the first call
  (and a new batch size) compiles, which takes tens of seconds.
- ``'reference'``: the quantize/dequantize graph run op by op in float: the int8 model's exact arithmetic on any
  CPU, slow. It is what the ONNX QDQ export writes (``regzoo.deploy.export.export_int8_onnx``).

The batch size is free. Another image size than the calibration images' lowers the quantized graph again for that
size on its first call (once per size, the calibration's scales kept); an ONNX Runtime / OpenVINO int8 model keeps
the calibration size.

Activations are 8-bit where the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX) and 7-bit
(``reduce_range``) elsewhere: without VNNI, oneDNN and onnxruntime multiply uint8 x int8 pairs into int16 sums,
which overflow for 8-bit activations. On a trained regnetx_002 on an AVX2 CPU the oneDNN kernels lost 15 points of
top-1 with 8 bits, where the exact int8 arithmetic (``'reference'``) lost none, and under 2 with 7 bits
(benchmarks/int8_agreement.py). A file exported for VNNI machines can take 8 bits anyway: ``reduce_range=False``.
"""
from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn as nn

from regzoo.deploy.inference import fold_bn
from regzoo.models.layers import ConvNormAct
from regzoo.utils.extras import require
from regzoo.utils.machine import describe_machine
from regzoo.utils.runtime import Progress

_logger = logging.getLogger(__name__)
BACKENDS = ('onednn', 'inductor', 'reference')
DEFAULT_CALIBRATION_IMAGES = 256
CalibrationImages = str | os.PathLike | torch.Tensor | Iterable
# what a model built by create_model answers besides forward: the eval transform and labels come from these
_MODEL_INFO = ('pretrained_cfg', 'default_cfg', 'num_classes', 'in_chans', 'cfg')


def require_torchao():
    """torchao's PT2E quantization (the ``[quantize]`` extra); raises ``MissingExtraError`` naming it."""
    # torchao logs a deprecation warning from torch's pytree registry on import: noise for a user
    pytree_log = logging.getLogger('torch.utils._pytree')
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        require('torchao', 'quantize', 'int8 quantization')
        import torchao.quantization.pt2e.quantize_pt2e as quantize_pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    finally:
        pytree_log.setLevel(level)
    return quantize_pt2e, x86


def default_reduce_range() -> bool:
    """7-bit activations unless this CPU has int8 dot-product instructions (see the module docstring)."""
    return not describe_machine().vnni


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every ConvNormAct's BN folded into its conv (which gets a bias).

    Raises for a BN that does not follow a conv (pre-activation RegNetV blocks): it cannot be folded.
    """
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, ConvNormAct) and isinstance(m.bn, nn.BatchNorm2d):
            weight, bias = fold_bn(m.conv, m.bn)
            conv = m.conv
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                               conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
            with torch.no_grad():
                folded.weight.copy_(weight)
                folded.bias.copy_(bias)
            m.conv, m.bn = folded, nn.Identity()
    left = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f'cannot fold BatchNorm {left[0]} (and {len(left) - 1} more) into a conv: int8 quantization '
                         'supports BN after a conv only (not pre-activation blocks)')
    return model


def _first_tensor(item) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0]  # (images, targets) from a DataLoader
    raise TypeError(f'calibration batches must be image tensors or (images, ...) tuples, got {type(item).__name__}')


def _folder_batches(folder: str | os.PathLike, transform: Callable, batch_size: int, workers: int) -> Iterator:
    from regzoo.data.datasets import EvalDataset, collate_eval
    from regzoo.eval.predict import find_images

    if not os.path.isdir(folder):
        raise FileNotFoundError(f'calibration folder {folder} does not exist or is not a folder')
    dataset = EvalDataset([(p, 0) for p in find_images([folder])], {}, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_eval)
    for images, _, _, skipped in loader:
        for item in skipped:
            _logger.warning('calibration: skipped unreadable image %s (%s)', item.path, item.reason)
        if images is not None:
            yield images


def calibration_batches(
        images: CalibrationImages, transform: Callable | None = None, *, batch_size: int = 32,
        max_images: int | None = DEFAULT_CALIBRATION_IMAGES, workers: int = 0,
) -> Iterator[torch.Tensor]:
    """Float NCHW batches, at most ``max_images`` images in all, from: a folder of images (searched recursively,
    read with ``transform``: the model's eval transform), an (N, C, H, W) tensor, or an iterable of batches
    (tensors, or ``(images, targets)`` tuples as a DataLoader gives)."""
    if isinstance(images, (str, os.PathLike)):
        if transform is None:
            raise ValueError('a calibration folder needs the transform its images are read with')
        batches = _folder_batches(images, transform, batch_size, workers)
    elif isinstance(images, torch.Tensor):
        batches = iter(images.split(batch_size) if images.ndim == 4 else [images])
    else:
        batches = (_first_tensor(item) for item in images)
    seen = 0
    for batch in batches:
        if batch.ndim != 4 or not batch.is_floating_point():
            raise ValueError(f'calibration images must be float NCHW batches, got {batch.dtype} of shape '
                             f'{tuple(batch.shape)}')
        if max_images is not None:
            batch = batch[:max_images - seen]
        seen += len(batch)
        yield batch.float()
        if max_images is not None and seen >= max_images:
            return


def _decompositions() -> dict:
    """torch.export's default decompositions minus the ones of primitive ops: what inductor's lowering expects
    (torchao's ``lower_pt2e_quantized_to_x86`` uses the same table)."""
    table = torch.export.default_decompositions()
    return {k: v for k, v in table.items() if torch._export.utils._is_cia_op(k)}


def lower_to_onednn(graph: torch.fx.GraphModule, example: torch.Tensor) -> torch.fx.GraphModule:
    """The quantized graph with dequant-conv-quant patterns replaced by oneDNN int8 ops and weights prepacked.

    torchao's ``lower_pt2e_quantized_to_x86`` does this for one fixed input shape; here the batch stays dynamic.
    """
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    batch = torch.export.Dim('batch', min=1, max=4096)
    lowered = torch.export.export(graph, (example,), dynamic_shapes=({0: batch},), strict=False)
    lowered = lowered.run_decompositions(_decompositions()).module()
    for node in list(lowered.graph.nodes):  # the qlinear pattern matches permute, not aten.t
        if node.target == torch.ops.aten.t.default:
            with lowered.graph.inserting_before(node):
                node.replace_all_uses_with(lowered.graph.call_function(torch.ops.aten.permute.default,
                                                                       (node.args[0], [1, 0])))
            lowered.graph.erase_node(node)
    lowered.recompile()
    freezing_passes(lowered, (example,))
    constant_fold(lowered)
    return lowered


class QuantizedModel(nn.Module):
    """An int8 model made by ``quantize``: eval-only, float NCHW in, float logits out.

    ``graph`` is the quantized reference graph (quantize/dequantize ops around float convs: per-channel int8
    weight constants, per-tensor uint8 activation parameters), ``runner`` what ``backend`` runs. The source
    model's ``pretrained_cfg`` / ``num_classes`` / ``in_chans`` are kept, so ``regzoo.predict`` and the eval
    transform work on it as on the source model.
    """

    def __init__(self, graph: torch.fx.GraphModule, runner: Callable, backend: str,
                 input_size: tuple[int, int, int], calibration_images: int, reduce_range: bool,
                 source: nn.Module | None = None):
        super().__init__()
        self.graph = graph
        self.runner = runner
        self.backend = backend
        # what runs ``runner``: 'torch' (``backend``), or the engine regzoo.deploy.engines.quantize put in its place
        self.engine = 'torch'
        self.engine_choice = None  # regzoo.deploy.engines.quantize sets it: the engine and why
        self.input_size = input_size
        self.calibration_images = calibration_images
        self.reduce_range = reduce_range
        self._sized_runners: dict[tuple[int, ...], Callable] = {}  # other input sizes' runners (``_runner_for``)
        for name in _MODEL_INFO:
            if source is not None and hasattr(source, name):
                setattr(self, name, getattr(source, name))
        self.training = False

    def train(self, mode: bool = True) -> QuantizedModel:
        if mode:
            raise RuntimeError('a quantized model is eval-only (BN folded, int8 weights); train the original model')
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        runner = self.runner if tuple(x.shape[1:]) == self.input_size else self._runner_for(x)
        with torch.no_grad():
            x = x.float().contiguous()
            # freezing (constant weights) is what enables inductor's int8 fusions
            if self.engine == 'torch' and self.backend == 'inductor':
                from torch._inductor import config
                with config.patch(freezing=True):
                    return runner(x)
            return runner(x)

    def _runner_for(self, x: torch.Tensor) -> Callable:
        """What runs inputs of ``x``'s (C, H, W): the quantized graph lowered again for that size, once per size.

        The calibration's scales stay (activation ranges do not depend on the image size); only the lowering is
        shape-specialised. An engine's runner (ONNX Runtime, OpenVINO) is fixed to the calibration size.
        """
        size = tuple(x.shape[1:])
        if self.engine != 'torch' or len(size) != len(self.input_size) or size[0] != self.input_size[0]:
            raise ValueError(f'this int8 model ({self.engine}) was quantized for {"x".join(map(str, self.input_size))} '
                             f'inputs, got {"x".join(map(str, size))}; quantize again with images of that size '
                             '(regzoo.quantize(model, images))')
        if size not in self._sized_runners:
            _logger.info('int8: lowering the quantized graph again for %s inputs (calibrated at %s; its scales '
                         'are kept)...', 'x'.join(map(str, size)), 'x'.join(map(str, self.input_size)))
            example = torch.zeros(2, *size)  # batch 2: torch.export specialises a batch of 1 to a constant
            with torch.no_grad():
                self._sized_runners[size] = _runner(self.graph, self.backend, example)
        return self._sized_runners[size]

    def extra_repr(self) -> str:
        return (f'engine={self.engine}, backend={self.backend}, input_size={self.input_size}, '
                f'calibration_images={self.calibration_images}, activations={self.activation_bits}-bit')

    @property
    def activation_bits(self) -> int:
        return 7 if self.reduce_range else 8


def quantize_pt2e(
        model: nn.Module, calibration_images: CalibrationImages, backend: str = 'onednn', *,
        max_images: int | None = DEFAULT_CALIBRATION_IMAGES, batch_size: int = 32, reduce_range: bool | None = None,
        transform: Callable | None = None, workers: int = 0, keep_batches: list | None = None,
) -> QuantizedModel:
    """An int8 copy of ``model`` (which is not changed), calibrated on ``calibration_images``.

    Args:
        model: a RegNet (or any module of regzoo layers) on CPU; a model in training mode is copied in eval mode.
        calibration_images: a folder of images (read with ``transform``, default the model's eval transform:
            ``resolve_data_config(model=model)``), an (N, C, H, W) float tensor, or an iterable of such batches /
            ``(images, targets)`` tuples (a DataLoader). A few hundred images like the ones it will see suffice.
        backend: 'onednn', 'inductor' or 'reference' (see the module docstring): how the int8 model runs.
        max_images: calibrate on at most this many images (None: all).
        batch_size: images per calibration batch when reading a folder or splitting a tensor.
        reduce_range: 7-bit activations, which CPUs without VNNI need (see the module docstring); None: 7-bit
            exactly when this CPU has no VNNI. False for a model exported to run on VNNI machines.
        workers: image decoding processes for a calibration folder.
        keep_batches: a list to append every calibration batch to (``regzoo.deploy.engines.quantize`` measures
            top-1 agreement on them), or None.

    ``regzoo.quantize`` is ``regzoo.deploy.engines.quantize``: this, plus ``engine=`` (ONNX Runtime, OpenVINO).
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend={backend!r} is invalid: must be one of {BACKENDS}')
    if next((p for p in model.parameters() if p.device.type != 'cpu'), None) is not None:
        raise ValueError('int8 quantization runs on CPU: move the model to the CPU first (model.cpu())')
    quantize_pt2e, x86 = require_torchao()
    if reduce_range is None:
        reduce_range = default_reduce_range()
    if isinstance(calibration_images, (str, os.PathLike)) and transform is None:
        from regzoo.eval.transform import eval_transform
        transform = eval_transform(model)
    float_model = fold_batchnorm(model)
    batches = calibration_batches(calibration_images, transform, batch_size=batch_size, max_images=max_images,
                                  workers=workers)
    first = next(batches, None)
    if first is None:
        raise ValueError('no calibration images: give a folder with readable images, a tensor or a non-empty loader')
    example = torch.cat([first[:1], first[:1]])  # batch 2: torch.export specialises a batch of 1 to a constant
    batch = torch.export.Dim('batch', min=1, max=4096)
    with torch.no_grad():
        graph = torch.export.export(float_model, (example,), dynamic_shapes=({0: batch},)).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
        prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
        count = 0
        _logger.info('int8: calibrating on %s images of %s...', max_images or 'all the', 'x'.join(map(str, first.shape[1:])))
        progress = Progress(max_images, 'int8: calibrating', unit='img', interval=10.0, logger=_logger)
        for images in _prepend(first, batches):
            if tuple(images.shape[1:]) != tuple(first.shape[1:]):
                raise ValueError(f'calibration images differ in size: {tuple(first.shape[1:])} and '
                                 f'{tuple(images.shape[1:])}; resize them to one size (a transform does)')
            prepared(images)
            count += len(images)
            progress.update(len(images))
            if keep_batches is not None:
                keep_batches.append(images)
        progress.close()
        graph = without_shape_guards(quantize_pt2e.convert_pt2e(prepared))
        if backend == 'onednn':
            _logger.info('int8: lowering to oneDNN int8 ops...')
        runner = _runner(graph, backend, example)
    _logger.info('int8: calibrated on %d images of %s, %d-bit activations, backend %s', count,
                 'x'.join(map(str, first.shape[1:])), 7 if reduce_range else 8, backend)
    return QuantizedModel(graph, runner, backend, tuple(first.shape[1:]), count, reduce_range, source=model)


def without_shape_guards(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``graph`` without torch.export's input-shape guard (``_guards_fn``: H and W equal to the export example's).

    The quantized graph's ops (convs, pooling to 1x1, the classifier) hold for any image size; only the guard and
    the lowering are shape-specialised, so ``QuantizedModel`` lowers this graph again for a new size.
    """
    for node in list(graph.graph.nodes):
        if node.op == 'call_module' and node.target == '_guards_fn':
            graph.graph.erase_node(node)
    graph.recompile()
    return graph


def _runner(graph: torch.fx.GraphModule, backend: str, example: torch.Tensor) -> Callable:
    """What runs the quantized ``graph`` on ``backend`` for inputs of ``example``'s (C, H, W), any batch."""
    if backend == 'onednn':
        return lower_to_onednn(graph, example)
    if backend == 'inductor':
        return torch.compile(graph)
    return graph


def _prepend(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest
