"""Inference fast path: BN folded into convs, conv+bias+act(+residual add) as single oneDNN calls.

Why it is fast on CPU (measured, see README "Fast inference and benchmarks"):
- eager ``nn.Conv2d`` reorders its weight to oneDNN's blocked layout on *every* call; here the weight
  is reordered once (``mkldnn._reorder_convolution_weight``) and reused.
- BN, ReLU and the residual add run as oneDNN post-ops inside the conv instead of as separate passes
  over the activations (each of those is a full memory round trip, and RegNet is memory-bound).
- SE gates use ``F.linear`` on (N, C) rather than 1x1 convs on (N, C, 1, 1) tensors, and scale in place.
- fewer, in-place intermediate tensors: fewer fresh pages for the allocator to fault in per call (see
  ``regzoo.utils.machine.retain_freed_memory`` for removing that cost from every model in a process).
The optimized model is a copy: the caller's model is never changed. ``dtype='auto'`` picks bf16 only where
it is native, measured faster and agrees with fp32's top-1 on calibration images (``DtypeChoice`` says why).
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from regzoo.data.synthetic import synthetic_batch
from regzoo.eval.loop import top1_agreement
from regzoo.models.layers import ConvNormAct, SqueezeExcite
from regzoo.models.regnet import Bottleneck
from regzoo.utils.files import atomic_write
from regzoo.utils.machine import bf16_native, cpu_name
from regzoo.utils.timing import device_synchronizer, timed_interleaved

# nn activation type -> (oneDNN post-op name, eager function)
_ACTS = {
    nn.ReLU: ('relu', F.relu),
    nn.SiLU: ('swish', F.silu),
    nn.GELU: ('gelu', F.gelu),
    nn.Identity: ('none', None),
}
MEMORY_FORMATS = {'channels_last': torch.channels_last, 'contiguous': torch.contiguous_format}
DTYPES = {None: torch.float32, 'float32': torch.float32, 'bfloat16': torch.bfloat16,
          torch.float32: torch.float32, torch.bfloat16: torch.bfloat16}
MIN_BF16_AGREEMENT = 0.99  # dtype='auto' keeps bf16 only if its top-1 matches fp32's on this share of images
CALIBRATION_IMAGES = 32  # dtype='auto''s default calibration batch (synthetic_batch, seed 0)
_LOGGER = logging.getLogger(__name__)


def _act_of(module: nn.Module) -> str:
    for kind, (name, _) in _ACTS.items():
        if type(module) is kind:
            if kind is nn.GELU and module.approximate != 'none':
                raise ValueError(f'cannot fuse {module!r}: only exact GELU is supported')
            return name
    raise ValueError(f'cannot fuse activation {module!r}: supported are {[k.__name__ for k in _ACTS]}')


def _eager_act(name: str):
    return next(fn for attr, fn in _ACTS.values() if attr == name)


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the conv that equals ``bn(conv(x))`` in eval mode: torch's ``fuse_conv_bn_weights``,
    fed float64 copies and cast back, because torch computes in the weight's dtype and the float32 rounding of
    ``gamma / sqrt(var + eps)`` would add up to 1 ulp of error per weight on top of the conv's own."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f'cannot fold {bn!r}: it has no running stats (track_running_stats=False)')
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    def f64(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().double()

    weight, bias = fuse_conv_bn_weights(f64(conv.weight), f64(conv.bias), f64(bn.running_mean), f64(bn.running_var),
                                        bn.eps, f64(bn.weight), f64(bn.bias))
    return weight.detach().to(conv.weight.dtype), bias.detach().to(conv.weight.dtype)


class FusedConv(nn.Module):
    """conv(+folded BN) -> act, as one oneDNN call with a pre-packed weight where oneDNN can run it."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, act: str):
        super().__init__()
        self.register_buffer('weight', weight.detach().clone())
        self.register_buffer('bias', None if bias is None else bias.detach().clone())
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.act = act
        # opaque oneDNN tensor made on the first call after pack(); deliberately not a buffer: it cannot
        # be saved, copied or moved
        self.packed: torch.Tensor | None = None
        self.use_onednn = False

    def pack(self) -> None:
        """Run the fused oneDNN kernels from now on, with the weight reordered once, on the first call."""
        self.use_onednn = True

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        # oneDNN picks the weight layout for the input shape; packed for the wrong shape, it would be
        # re-laid out on every call, so the first real input is the shape hint (inductor does the same)
        if self.packed is None:
            self.packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape))
        return self.packed

    @classmethod
    def from_conv_norm_act(cls, m: ConvNormAct) -> FusedConv:
        weight, bias = fold_bn(m.conv, m.bn)
        return cls(m.conv, weight, bias, _act_of(m.act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_onednn:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._packed_weight(x), self.bias, self.padding, self.stride, self.dilation, self.groups,
                self.act, [], 'none' if self.act == 'gelu' else '')
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return x if self.act == 'none' else _eager_act(self.act)(x)

    def forward_add(self, x: torch.Tensor, other: torch.Tensor, act: str) -> torch.Tensor:
        """act(conv(x) + other): the residual add and the block's last act as oneDNN post-ops."""
        if self.use_onednn and self.act == 'none' and other.is_contiguous(memory_format=torch.channels_last) == \
                x.is_contiguous(memory_format=torch.channels_last):
            # oneDNN's binary post-op chain takes only ReLU after the add
            fused_act = act if act == 'relu' else None
            x = torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, self._packed_weight(x), self.bias, self.padding, self.stride, self.dilation, self.groups,
                'add', None, fused_act, [], '')
            return x if act in ('none', fused_act) else _eager_act(act)(x)
        x = self.forward(x) + other
        return x if act == 'none' else _eager_act(act)(x)

    def extra_repr(self) -> str:
        return (f'{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={self.weight.shape[2:]},'
                f' stride={self.stride}, groups={self.groups}, act={self.act}, onednn={self.use_onednn}')


class FastSqueezeExcite(nn.Module):
    """SqueezeExcite with linear layers on the pooled (N, C) vector and an in-place scale."""

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.fc1 = nn.Linear(se.fc1.in_channels, se.fc1.out_channels)
        self.fc2 = nn.Linear(se.fc2.in_channels, se.fc2.out_channels)
        with torch.no_grad():
            for lin, conv in ((self.fc1, se.fc1), (self.fc2, se.fc2)):
                lin.weight.copy_(conv.weight.flatten(1))
                lin.bias.copy_(conv.bias)
        self.act = _eager_act(_act_of(se.act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.fc2(self.act(self.fc1(x.mean((2, 3))))).sigmoid()
        # x is the grouped conv's fresh output, owned by this block: scaling it in place is safe
        return x.mul_(gates[:, :, None, None])


class FusedBottleneck(nn.Module):
    """Bottleneck with folded BNs; conv3 + shortcut add + act3 run as one call."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1 = FusedConv.from_conv_norm_act(block.conv1)
        self.conv2 = FusedConv.from_conv_norm_act(block.conv2)
        self.se = FastSqueezeExcite(block.se) if isinstance(block.se, SqueezeExcite) else nn.Identity()
        self.conv3 = FusedConv.from_conv_norm_act(block.conv3)
        self.out_act = _act_of(block.act3)
        self.downsample = None if block.downsample is None else fuse_modules(block.downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.conv2(self.conv1(x)))
        if self.downsample is None:
            y = self.conv3(y)
            return y if self.out_act == 'none' else _eager_act(self.out_act)(y)
        return self.conv3.forward_add(y, self.downsample(x), self.out_act)


def fuse_modules(module: nn.Module) -> nn.Module:
    """``module`` with every Bottleneck / ConvNormAct / SqueezeExcite in it replaced, in place, by its fused form.

    Other modules (PreBottleneck, the head, pooling) are kept as they are. Eval-mode semantics only.
    """
    if isinstance(module, Bottleneck):
        return FusedBottleneck(module)
    if isinstance(module, ConvNormAct):
        return FusedConv.from_conv_norm_act(module)
    if isinstance(module, SqueezeExcite):
        return FastSqueezeExcite(module)
    for name, child in list(module.named_children()):
        setattr(module, name, fuse_modules(child))
    return module


class InferenceModel(nn.Module):
    """Eval-only wrapper: casts the input to the model's memory format and dtype, runs without autograd,
    returns the output in the input's floating dtype. ``train(True)`` raises."""

    def __init__(self, model: nn.Module, memory_format: torch.memory_format, dtype: torch.dtype,
                 compiled: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.memory_format = memory_format
        self.dtype = dtype
        self._compiled = compiled  # torch.compile's wrapper around self.model, or None
        self.dtype_choice: DtypeChoice | None = None  # set by optimize_for_inference: the dtype and why
        self.training = False

    def train(self, mode: bool = True) -> InferenceModel:
        if mode:
            raise RuntimeError('an optimize_for_inference model is eval-only (BN is folded into the convs); '
                               'train the original model instead')
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype if x.is_floating_point() else self.dtype
        with torch.no_grad():
            x = x.to(dtype=self.dtype, memory_format=self.memory_format)
            out = (self.model if self._compiled is None else self._compiled)(x)
        return out.to(out_dtype)


def _build(model: nn.Module, fuse_bn: bool, memory_format: torch.memory_format, dtype: torch.dtype,
           device: torch.device, pack: bool = True) -> InferenceModel:
    model = copy.deepcopy(model).eval().requires_grad_(False)
    if fuse_bn:  # folded in the model's own precision (BN stats in bf16 would lose digits), then cast
        model = fuse_modules(model)
    model = model.to(dtype=dtype, memory_format=memory_format)
    # the oneDNN fused kernels need a CPU with oneDNN and, for bf16, native bf16 support in oneDNN
    if pack and device.type == 'cpu' and torch.backends.mkldnn.is_available() and (
            dtype == torch.float32 or torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        for m in model.modules():
            if isinstance(m, FusedConv):
                m.pack()
    return InferenceModel(model, memory_format, dtype)


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype an ``optimize_for_inference`` model runs in, and why (``model.dtype_choice``)."""
    dtype: str  # 'float32' or 'bfloat16'
    reason: str
    fp32_ms: float | None = None  # median ms per example batch, where measured
    bf16_ms: float | None = None
    agreement: float | None = None  # top-1 agreement of bf16 with fp32 on the calibration images
    images: int = 0


def choose_dtype(bf16_native: bool, fp32_ms: float | None = None, bf16_ms: float | None = None,
                 agreement: float | None = None, images: int = 0,
                 min_agreement: float = MIN_BF16_AGREEMENT) -> DtypeChoice:
    """dtype='auto''s rule: bf16 only where it is native, measured faster than fp32, *and* agrees with fp32's
    top-1 on at least ``min_agreement`` of the calibration images; otherwise fp32, with the reason."""
    if not bf16_native:
        return DtypeChoice('float32', 'no native bf16 on this device (oneDNN needs AVX512-BF16 / AMX / '
                                      'AVX-NE-CONVERT): bf16 would run on slow fallback kernels; not measured')
    measured = dict(fp32_ms=fp32_ms, bf16_ms=bf16_ms, agreement=agreement, images=images)
    speed = f'bf16 {bf16_ms:.1f} ms vs fp32 {fp32_ms:.1f} ms per batch'
    agrees = f'top-1 agreement with fp32 {agreement:.3f} on {images} calibration images'
    failed = ([f'bf16 is not faster ({speed})'] if bf16_ms >= fp32_ms else []) + (
        [f'{agrees} < {min_agreement}'] if agreement < min_agreement else [])
    if failed:
        return DtypeChoice('float32', '; '.join(failed), **measured)
    return DtypeChoice('bfloat16', f'{speed} ({fp32_ms / bf16_ms:.2f}x), {agrees} >= {min_agreement}', **measured)


def measure_dtype(build: Callable[[torch.dtype], InferenceModel], x: torch.Tensor, images: torch.Tensor | None,
                  in_chans: int, bf16_native: bool, repeats: int = 5) -> tuple[DtypeChoice, InferenceModel | None]:
    """dtype='auto''s measurement: fp32 and bf16 builds timed on ``x``, their top-1 agreement on ``images``.

    Returns the choice and the chosen build (None where nothing was built: no native bf16).
    """
    if not bf16_native:
        return choose_dtype(False), None
    if images is None:
        if in_chans != 3:
            raise ValueError(f"dtype='auto' on a {in_chans}-channel model needs calibration_images: the default "
                             'calibration images are RGB')
        images = synthetic_batch(CALIBRATION_IMAGES, x.shape[-1], seed=0)[0]
    candidates = {torch.float32: build(torch.float32), torch.bfloat16: build(torch.bfloat16)}
    with torch.no_grad():
        times = timed_interleaved({k: functools.partial(m, x) for k, m in candidates.items()}, repeats, warmup=1,
                                  sync=device_synchronizer(x.device))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    images = images.to(x.device)
    agreement = top1_agreement(candidates[torch.bfloat16], candidates[torch.float32], images, x.shape[0])
    choice = choose_dtype(True, ms[torch.float32], ms[torch.bfloat16], agreement, len(images))
    return choice, candidates[DTYPES[choice.dtype]]


def choose_memory_format(candidates: dict[str, nn.Module], x: torch.Tensor, repeats: int = 5) -> str:
    """The key of the fastest candidate: median of interleaved timings, channels_last unless beaten by 5%."""
    with torch.no_grad():
        times = timed_interleaved({k: functools.partial(m, x) for k, m in candidates.items()}, repeats,
                                  warmup=1, sync=device_synchronizer(x.device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return 'contiguous' if med['contiguous'] < 0.95 * med['channels_last'] else 'channels_last'


def tuning_key(model: nn.Module, fuse_bn: bool, dtype: torch.dtype, shape: tuple[int, ...]) -> str | None:
    cfg = getattr(model, 'cfg', None)
    if cfg is None:
        return None  # no architecture identity to key on: measure every time
    arch = hashlib.sha1(repr((cfg, model.num_classes)).encode()).hexdigest()[:16]
    return '|'.join(map(str, (torch.__version__, cpu_name(),
                              torch.get_num_threads(), arch, fuse_bn, dtype, tuple(shape))))


def _resolve_memory_format(model: nn.Module, fuse_bn: bool, memory_format: str, dtype: torch.dtype,
                           device: torch.device, x: torch.Tensor, cache_path: str | Path | None) -> str:
    """``memory_format``, or for 'auto' the faster one on ``x``: measured, or read from / written to the JSON file
    ``cache_path`` when the caller gives one (nothing is read or written otherwise)."""
    if memory_format != 'auto':
        return memory_format
    x = x.to(device=device, dtype=dtype)
    key = tuning_key(model, fuse_bn, dtype, tuple(x.shape))
    path = Path(cache_path) if cache_path is not None else None
    cache = json.loads(path.read_text()) if path and key and path.is_file() else {}
    if key in cache:
        return cache[key]
    # the slow part of a first call (seconds to half a minute on a big model): say what it is doing
    _LOGGER.info('optimize_for_inference: timing memory formats (%s) at batch %d, %s px%s...',
                 ', '.join(MEMORY_FORMATS), x.shape[0], 'x'.join(map(str, x.shape[2:])),
                 '' if path else ' (cache_path= keeps the choice for later calls)')
    candidates = {k: _build(model, fuse_bn, v, dtype, device) for k, v in MEMORY_FORMATS.items()}
    memory_format = choose_memory_format(candidates, x)
    if path and key:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache[key] = memory_format
        # atomic: processes sharing the cache (parallel tests, benchmarks) never read a torn file
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(cache, indent=1, sort_keys=True)))
    return memory_format


def torch_fast_path(
        model: nn.Module, *, fuse_bn: bool = True, memory_format: str | torch.memory_format = 'auto',
        dtype: str | torch.dtype | None = None, compile: bool = False, example_input: torch.Tensor | None = None,
        cache_path: str | Path | None = None, calibration_images: torch.Tensor | None = None,
) -> InferenceModel:
    """An eval-only, no-grad copy of ``model`` that runs faster; ``model`` itself is not changed.

    Args:
        model: a RegNet (or any module built from regzoo layers). A model in training mode is copied
            in eval mode (running BN stats, no dropout / drop-path), with a warning that says so.
        fuse_bn: fold each BN into the conv before it and fuse conv+bias+act(+residual add) into
            single oneDNN calls on CPU. ``False`` keeps the modules (memory format / dtype only).
        memory_format: 'channels_last', 'contiguous', or 'auto': time both on ``example_input``
            (default: batch 8 at 224x224) and keep the faster. Measured on every call unless ``cache_path``
            names a JSON file to keep choices in.
        dtype: None / 'float32', 'bfloat16' (weights and activations; outputs come back in the input's
            dtype; fast only where oneDNN has native bf16: AVX512-BF16 / AMX / AVX-NE-CONVERT), or 'auto':
            bf16 only where it is native, measured faster than fp32 on ``example_input`` *and* its top-1
            agrees with fp32's on >= 99 % of ``calibration_images``; else fp32. The returned model's
            ``dtype_choice`` (a ``DtypeChoice``) says which and why; the choice is logged too.
        compile: also ``torch.compile`` the fused model (inductor, with weight freezing); the first call
            compiles, which takes a while.
        example_input: the input 'auto' formats and dtypes are timed on; its batch size and resolution matter.
        cache_path: a JSON file of memory-format choices keyed by torch version, CPU, threads, arch, dtype and
            input shape: read first, the new choice added, so later calls are instant and repeat the same choice.
            None (default): nothing is read or written; the result depends on this call's timing only.
        calibration_images: the (N, C, H, W) model inputs dtype='auto' measures top-1 agreement on; default
            32 generated images (``regzoo.data.synthetic.synthetic_batch``, seed 0) at ``example_input``'s size.
            Use images of your own domain: a model with an untrained head predicts one class for every
            image, which agrees trivially.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'optimize_for_inference needs an nn.Module, got {type(model).__name__}')
    if dtype != 'auto' and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid: must be None, 'float32', 'bfloat16' or 'auto'")
    if isinstance(memory_format, torch.memory_format):
        memory_format = {v: k for k, v in MEMORY_FORMATS.items()}.get(memory_format, memory_format)
    if memory_format not in (*MEMORY_FORMATS, 'auto'):
        raise ValueError(f'memory_format={memory_format!r} is invalid: must be one of '
                         f'{[*MEMORY_FORMATS, "auto"]}')
    if model.training:
        warnings.warn('optimize_for_inference: the model is in training mode; the optimized copy is eval-only '
                      '(BN uses its running stats, dropout and drop-path are off). The original is unchanged.',
                      stacklevel=2)
    device = next((p.device for p in model.parameters()), torch.device('cpu'))
    in_chans = getattr(model, 'in_chans', 3)
    x = example_input if example_input is not None else torch.randn(8, in_chans, 224, 224)

    def build(dt: torch.dtype) -> InferenceModel:
        fmt = _resolve_memory_format(model, fuse_bn, memory_format, dt, device, x, cache_path)
        return _build(model, fuse_bn, MEMORY_FORMATS[fmt], dt, device)

    chosen = None
    if dtype == 'auto':
        choice, chosen = measure_dtype(build, x.to(device), calibration_images, in_chans, bf16_native(device))
        _LOGGER.info("optimize_for_inference: dtype='auto' chose %s: %s", choice.dtype, choice.reason)
    else:
        choice = DtypeChoice(str(DTYPES[dtype]).removeprefix('torch.'), f'requested (dtype={dtype!r})')
        if DTYPES[dtype] == torch.bfloat16 and not bf16_native(device):
            warnings.warn('optimize_for_inference: this CPU has no native bfloat16 support in oneDNN '
                          '(AVX512-BF16 / AMX / AVX-NE-CONVERT); bfloat16 will run on slow fallback kernels',
                          stacklevel=2)
    dtype = DTYPES[choice.dtype]
    out = chosen if chosen is not None else build(dtype)
    if compile:
        # inductor cannot see through pre-packed opaque weights: compile the dense folded model and let
        # inductor's freezing pass do the weight packing and conv fusions itself
        dense = _build(model, fuse_bn, out.memory_format, dtype, device, pack=False).model
        _LOGGER.info('optimize_for_inference: compiling with inductor: the first call compiles (about a minute)...')
        out = InferenceModel(dense, out.memory_format, dtype, torch.compile(dense, options={'freezing': True}))
    out.dtype_choice = choice
    return out
