"""Model complexity: FLOPs, parameters and activations, counted analytically or measured on a built model.

Convention (pycls's, the one the paper and every "400MF" / "3.2GF" name use):

- ``flops``: multiply-adds (not 2x), of every convolution and linear layer, *head included*, plus one
  add per output channel for each bias. BatchNorm, activations, pooling, the SE gating product and
  the residual add are free. Divide by 1e9 for the paper's "GF"; FLOP counters that report 2x
  (fvcore with ``flops`` naming, torch.utils.flop_counter) or skip the head give other numbers.
- ``params``: learnable parameters (BatchNorm counts weight + bias; running stats are buffers).
- ``acts``: output elements of every convolution and linear layer for one image (pycls's "acts",
  a proxy for memory traffic that predicts GPU runtime better than flops).

``complexity`` walks the block specs of ``design.make_blocks`` (the ones ``RegNet`` is built from)
with the spatial arithmetic of the convolutions, so it never builds a module (microseconds per
model: what design-space sampling needs). ``measure_complexity`` counts the same quantities with
forward hooks on a built model and is the cross-check.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from regzoo.models.design import BlockSpec, RegNetCfg, StageSpec, make_blocks, make_stages
from regzoo.zoo.builder import arch_cfg


class _Counts:
    """Running totals plus the current feature-map size (pycls's ``cx`` dict).

    Mutable and local to one count: design-space sampling calls ``complexity`` thousands of times.
    """
    __slots__ = ('h', 'w', 'flops', 'params', 'acts')

    def __init__(self, h: int, w: int):
        self.h, self.w, self.flops, self.params, self.acts = h, w, 0, 0, 0

    def conv(self, c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1, bias: bool = False):
        # every conv here pads 'same' for its (possibly dilated) odd kernel, so only the stride shrinks
        if stride > 1:
            self.h, self.w = (self.h - 1) // stride + 1, (self.w - 1) // stride + 1
        weights, biases = k * k * c_in * c_out // groups, c_out if bias else 0
        self.flops += weights * self.h * self.w + biases
        self.params += weights + biases
        self.acts += c_out * self.h * self.w
        return self

    def norm(self, c: int):
        self.params += 2 * c
        return self

    def at(self, h: int, w: int):
        self.h, self.w = h, w
        return self


def _squeeze_excite(cx: _Counts, chs: int, rd_chs: int) -> _Counts:
    # the SE convs act on the pooled 1x1 map: their flops are tiny but counted (pycls)
    h, w = cx.h, cx.w
    return cx.at(1, 1).conv(chs, rd_chs, bias=True).conv(rd_chs, chs, bias=True).at(h, w)


@dataclass(frozen=True)
class BlockOptions:
    """The ``RegNetCfg`` fields that shape the blocks around the stage specs (all of AnyNet needs)."""
    stem_width: int = 32
    se_ratio: float = 0.0
    downsample: str | None = 'conv1x1'
    preact: bool = False
    num_features: int = 0

    @classmethod
    def of(cls, cfg: RegNetCfg) -> BlockOptions:
        return cls(cfg.stem_width, cfg.se_ratio, cfg.downsample, cfg.preact, cfg.num_features)


def _block(cx: _Counts, block: BlockSpec, preact: bool) -> _Counts:
    """One Bottleneck / PreBottleneck: the layers ``regnet.py`` builds from the same ``BlockSpec``."""
    c_in, mid, out, stride, groups = block.in_chs, block.bottleneck_width, block.out_chs, block.stride, block.groups
    h, w = cx.h, cx.w
    if preact:  # norm1 -> conv1 -> norm2 -> conv2 -> se -> norm3 -> conv3
        cx = cx.norm(c_in).conv(c_in, mid).norm(mid).conv(mid, mid, 3, stride, groups)
        if block.se_width is not None:
            cx = _squeeze_excite(cx, mid, block.se_width)
        cx = cx.norm(mid).conv(mid, out)
    else:  # conv1 -> bn -> conv2 -> bn -> se -> conv3 -> bn
        cx = cx.conv(c_in, mid).norm(mid).conv(mid, mid, 3, stride, groups).norm(mid)
        if block.se_width is not None:
            cx = _squeeze_excite(cx, mid, block.se_width)
        cx = cx.conv(mid, out).norm(out)
    if block.shortcut not in ('identity', None):
        # a parallel branch: the 'avg' variant pools first and then runs the 1x1 at the output size,
        # which costs the same as the strided 1x1 of 'conv1x1'
        h_out, w_out = cx.h, cx.w
        cx = cx.at(h, w).conv(c_in, out, 1, stride)
        cx = (cx if preact else cx.norm(out)).at(h_out, w_out)
    return cx


def stage_complexity(
        stages: Sequence[StageSpec], options: BlockOptions = BlockOptions(), img_size: int | tuple[int, int] = 224,
        num_classes: int = 1000, in_chans: int = 3,
) -> dict[str, int]:
    """Complexity of the network made of ``stages`` with the block ``options`` (any AnyNet, not only RegNets)."""
    h, w = _check_size(img_size)
    for name, value in (('num_classes', num_classes), ('in_chans', in_chans)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (name == 'in_chans'):
            raise ValueError(f'{name}={value!r} is invalid: must be an int >= {int(name == "in_chans")}')
    cx = _Counts(h, w).conv(in_chans, options.stem_width, 3, 2)
    cx = cx if options.preact else cx.norm(options.stem_width)
    prev = options.stem_width
    for stage, blocks in zip(stages, make_blocks(stages, options.stem_width, options.se_ratio, options.downsample)):
        for block in blocks:
            cx = _block(cx, block, options.preact)
        prev = stage.width
    if options.num_features:
        cx = cx.conv(prev, options.num_features).norm(options.num_features)
        prev = options.num_features
    if num_classes:
        cx = cx.at(1, 1).conv(prev, num_classes, bias=True)  # the linear head on pooled features
    return dict(flops=cx.flops, params=cx.params, acts=cx.acts)


def complexity(
        name_or_cfg: str | RegNetCfg, img_size: int | tuple[int, int] = 224, num_classes: int = 1000,
        in_chans: int = 3, output_stride: int = 32,
) -> dict[str, int]:
    """Analytic ``dict(flops, params, acts)`` of a registered arch (name or alias) or a ``RegNetCfg``.

    pycls convention: flops are multiply-adds including the classifier head; acts are output
    elements of convs and linear layers. ``complexity('regnetx_004')['flops'] / 1e9`` is 0.3977.
    """
    cfg = resolve_cfg(name_or_cfg)
    return stage_complexity(make_stages(cfg, output_stride), BlockOptions.of(cfg), img_size, num_classes, in_chans)


def resolve_cfg(name_or_cfg: str | RegNetCfg) -> RegNetCfg:
    """The ``RegNetCfg`` of a registered arch (``arch``, ``arch.tag`` or an alias), or the cfg itself."""
    if isinstance(name_or_cfg, RegNetCfg):
        return name_or_cfg
    if not isinstance(name_or_cfg, str):
        raise TypeError(f'expected a model name or a RegNetCfg, got {type(name_or_cfg).__name__}')
    return arch_cfg(name_or_cfg)


def _check_size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    size = (img_size, img_size) if isinstance(img_size, int) and not isinstance(img_size, bool) else img_size
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f'img_size={img_size!r} is invalid: must be an int or (height, width) of ints >= 1')
    return tuple(size)


@torch.no_grad()
def measure_complexity(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> dict[str, int]:
    """``dict(flops, params, acts)`` counted on a built model by forward hooks on Conv2d and Linear.

    Same convention as ``complexity``; runs one image through ``model`` in eval mode (mode restored).
    """
    h, w = _check_size(img_size)
    totals = dict(flops=0, acts=0)

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        out_elems = output[0].numel()  # batch of one
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            out_chs = module.out_channels
        else:
            per_output, out_chs = module.in_features, module.out_features
        totals['flops'] += out_elems * per_output + (out_chs if module.bias is not None else 0)
        totals['acts'] += out_elems

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        param = next(model.parameters())
        model.eval()
        model(torch.zeros(1, in_chans, h, w, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return dict(flops=totals['flops'], params=sum(p.numel() for p in model.parameters()), acts=totals['acts'])
