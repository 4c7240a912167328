"""RegNet blocks, stage and network, built from the stage specs of ``design.make_stages``.

Module names are public API and equal timm's, so timm checkpoints load with ``strict=True``:
``stem.conv``, ``s{i}.b{j}.conv1/conv2/se/conv3``, ``s{i}.b{j}.downsample``, ``final_conv``, ``head.fc``.
"""
# No ``from __future__ import annotations`` here: torch.fx copies the root ``forward``'s annotations into the
# code it generates, and string annotations there (``_torch_Tensor_``) make ``torch.jit.script`` of a traced
# model fail. Annotations in modules with a ``forward`` stay real types (Python >= 3.10 evaluates ``X | None``).

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from regzoo.models.design import BlockSpec, RegNetCfg, make_blocks, make_stages
from regzoo.models.features import OutIndices, feature_take_indices
from regzoo.models.layers import ClassifierHead, ConvNormAct, DropPath, SqueezeExcite, create_act


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm then activation, as one module so its keys are ``norm1.weight`` (pre-activation blocks)."""

    def __init__(self, num_features: int, act: str = 'relu'):
        super().__init__(num_features)
        self.act = create_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class AvgPoolSame(nn.Module):
    """2x2 average pool, stride 1, padded right/bottom so the size is kept (avg shortcut in dilated stages)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, (0, 1, 0, 1)), 2, 1)


def create_shortcut(block: BlockSpec, preact: bool, norm: str) -> nn.Module | None:
    """The residual branch ``block.shortcut`` names: Identity, a projection, or None (no residual)."""
    if block.shortcut == 'identity':
        return nn.Identity()
    if block.shortcut is None:
        return None
    in_chs, out_chs, stride = block.in_chs, block.out_chs, block.stride
    if preact:
        proj = nn.Conv2d(in_chs, out_chs, 1, stride=1 if block.shortcut == 'avg' else stride, bias=False)
    else:
        proj = ConvNormAct(in_chs, out_chs, 1, stride=1 if block.shortcut == 'avg' else stride, act=None, norm=norm)
    if block.shortcut == 'conv1x1':
        return proj
    pool = nn.Identity()
    if stride > 1:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    elif block.dilation > 1:
        pool = AvgPoolSame()
    return nn.Sequential(pool, proj)


class Bottleneck(nn.Module):
    """1x1 -> grouped 3x3 -> SE -> 1x1 (no act) -> + shortcut -> act.

    SE sits after the grouped 3x3, as in pycls (not after conv3 as in SE-ResNet).
    """

    def __init__(
            self, block: BlockSpec, linear_out: bool = False, act: str = 'relu', norm: str = 'batchnorm',
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        mid = block.bottleneck_width
        self.conv1 = ConvNormAct(block.in_chs, mid, 1, act=act, norm=norm)
        self.conv2 = ConvNormAct(
            mid, mid, 3, stride=block.stride, dilation=block.dilation, groups=block.groups, act=act, norm=norm)
        self.se = nn.Identity() if block.se_width is None else SqueezeExcite(mid, block.se_width, act)
        self.conv3 = ConvNormAct(mid, block.out_chs, 1, act=None, norm=norm)
        self.act3 = nn.Identity() if linear_out else create_act(act)
        # NOTE 'downsample' is also the identity shortcut; the name is kept for checkpoint compatibility
        self.downsample = create_shortcut(block, False, norm)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv3(self.se(self.conv2(self.conv1(x))))
        if self.downsample is not None:
            x = self.drop_path(x) + self.downsample(shortcut)
        return self.act3(x)


class PreBottleneck(nn.Module):
    """Pre-activation bottleneck (RegNetV): norm-act before each conv, shortcut from the first norm."""

    def __init__(
            self, block: BlockSpec, linear_out: bool = False, act: str = 'relu', norm: str = 'batchnorm',
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        mid = block.bottleneck_width
        self.norm1 = BatchNormAct(block.in_chs, act)
        self.conv1 = nn.Conv2d(block.in_chs, mid, 1, bias=False)
        self.norm2 = BatchNormAct(mid, act)
        self.conv2 = nn.Conv2d(
            mid, mid, 3, stride=block.stride, padding=block.dilation, dilation=block.dilation, groups=block.groups,
            bias=False)
        self.se = nn.Identity() if block.se_width is None else SqueezeExcite(mid, block.se_width, act)
        self.norm3 = BatchNormAct(mid, act)
        self.conv3 = nn.Conv2d(mid, block.out_chs, 1, bias=False)
        self.downsample = create_shortcut(block, True, norm)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        pass  # the last op is a conv, there is no norm to zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        shortcut = x
        x = self.conv3(self.norm3(self.se(self.conv2(self.norm2(self.conv1(x))))))
        if self.downsample is not None:
            x = self.drop_path(x) + self.downsample(shortcut)
        return x


class RegStage(nn.Module):
    """The ``blocks`` of one stage (``design.block_specs``), named b1..bN."""

    def __init__(
            self, blocks: Sequence[BlockSpec], block_fn: type[nn.Module], drop_path_rates: list[float],
            **block_kwargs,
    ):
        super().__init__()
        self.grad_checkpointing = False
        for i, (block, rate) in enumerate(zip(blocks, drop_path_rates, strict=True)):
            self.add_module(f'b{i + 1}', block_fn(block, drop_path_rate=rate, **block_kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def drop_path_rates(rate: float, depths: list[int]) -> list[list[float]]:
    """Per-block drop-path rates rising linearly from 0 at the first block to ``rate`` at the last."""
    total = sum(depths)
    flat = [rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(flat[start:start + d])
        start += d
    return out


class RegNet(nn.Module):
    """stem -> s1..sN -> final_conv -> head, from a ``RegNetCfg``.

    Args:
        cfg: the design-space point and block options.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for no classifier (pooled features out).
        output_stride: 32, or 16 / 8 by dilating the last stages instead of striding.
        global_pool: 'avg', 'max', 'avgmax', or '' (no pooling, only with num_classes=0).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the last block, rising linearly from 0.
        zero_init_last: zero the last BN gamma of each block (timm default; the pycls recipe turns it off).
    """

    def __init__(
            self, cfg: RegNetCfg, in_chans: int = 3, num_classes: int = 1000, output_stride: int = 32,
            global_pool: str = 'avg', drop_rate: float = 0.0, drop_path_rate: float = 0.0,
            zero_init_last: bool = True,
    ):
        super().__init__()
        for name, value in (('in_chans', in_chans), ('num_classes', num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (name == 'in_chans'):
                raise ValueError(f'{name}={value!r} is invalid: must be an int >= {int(name == "in_chans")}')
        self.cfg = cfg
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.zero_init_last = zero_init_last
        self.stage_specs = make_stages(cfg, output_stride)

        if cfg.preact:
            self.stem = nn.Conv2d(in_chans, cfg.stem_width, 3, stride=2, padding=1, bias=False)
        else:
            self.stem = ConvNormAct(in_chans, cfg.stem_width, 3, stride=2, act=cfg.act, norm=cfg.norm)
        self.feature_info = [dict(num_chs=cfg.stem_width, reduction=2, module='stem')]

        block_fn = PreBottleneck if cfg.preact else Bottleneck
        dprs = drop_path_rates(drop_path_rate, [s.depth for s in self.stage_specs])
        blocks = make_blocks(self.stage_specs, cfg.stem_width, cfg.se_ratio, cfg.downsample)
        prev_width, stride = cfg.stem_width, 2
        for i, (spec, stage_blocks, dpr) in enumerate(zip(self.stage_specs, blocks, dprs)):
            name = f's{i + 1}'
            self.add_module(name, RegStage(
                stage_blocks, block_fn, dpr, linear_out=cfg.linear_out, act=cfg.act, norm=cfg.norm))
            prev_width, stride = spec.width, stride * spec.stride
            self.feature_info.append(dict(num_chs=prev_width, reduction=stride, module=name))

        # a plain list[str] attribute, not a property over feature_info: torch.jit.script can read it
        self.stage_names = [f['module'] for f in self.feature_info[1:]]

        if cfg.num_features:
            self.final_conv = ConvNormAct(prev_width, cfg.num_features, 1, act=cfg.act, norm=cfg.norm)
            self.num_features = cfg.num_features
        else:
            # pre-activation and linear-output nets end un-activated: the final act closes them
            self.final_conv = create_act(cfg.act) if cfg.linear_out or cfg.preact else nn.Identity()
            self.num_features = prev_width
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, drop_rate)
        self.head_hidden_size = self.num_features
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m.weight.is_meta:
                    continue  # built on the meta device: no values to draw (and meta init ops are slow to import)
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif self.zero_init_last and isinstance(m, (Bottleneck, PreBottleneck)):
                m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Regexes grouping parameters by depth (for layer-wise lr decay)."""
        return dict(stem=r'^stem', blocks=r'^s(\d+)' if coarse else r'^s(\d+)\.b(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for name in self.stage_names:
            stage = getattr(self, name)
            if isinstance(stage, RegStage):
                stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (deterministic init); ``num_classes=0`` removes it."""
        # from the stem, not the head: after reset_classifier(0) the head has no parameter left to say
        # where the model lives (meta, cuda) or in which dtype
        stem = next(self.stem.parameters())
        self.head.reset(num_classes, global_pool, device=stem.device, dtype=stem.dtype)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        # selected by name: torch.jit.script unrolls named_children() but evaluates isinstance(child, RegStage)
        # to False, which silently skipped every stage
        for name, module in self.named_children():
            if name in self.stage_names:
                x = module(x)
        return self.final_conv(x)

    @torch.jit.ignore
    def forward_intermediates(
            self, x: torch.Tensor, indices: OutIndices = None, norm: bool = False, stop_early: bool = False,
            output_fmt: str = 'NCHW', intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The tap outputs (stem, s1..sN) selected by ``indices``, in depth order, and the final features.

        timm's semantics: ``indices`` None -> every tap, int n -> the last n, a sequence -> those taps;
        ``stop_early`` stops after the deepest selected tap (final features are then that tap's output);
        ``norm`` is accepted for API compatibility (a RegNet has no final norm).
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt={output_fmt!r} is invalid: RegNet features are 'NCHW'")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        trunk = [self.stem] + [getattr(self, name) for name in self.stage_names]
        if stop_early:
            trunk = trunk[:max_index + 1]
        intermediates = []
        for i, module in enumerate(trunk):
            x = module(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if len(trunk) == len(self.feature_info):
            x = self.final_conv(x)
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
            self, indices: OutIndices = 1, prune_norm: bool = False, prune_head: bool = True,
    ) -> list[int]:
        """Replace the stages after the deepest tap in ``indices`` by Identity; returns the absolute indices kept.

        As timm: the final conv (when it has weights) goes with the head or the norm, and whenever a stage is
        cut; the head is reset to ``num_classes=0`` with no pooling when pruned or when the trunk was cut.
        """
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        last_tap = len(self.feature_info) - 1
        prune_end = max_index < last_tap or ((prune_norm or prune_head) and isinstance(self.final_conv, ConvNormAct))
        for name in self.stage_names[max_index:]:
            setattr(self, name, nn.Identity())
        if prune_end:
            self.final_conv = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
            # the head was sized for the old final features; rebuild it (empty) for the new width
            self.head = ClassifierHead(self.num_features, 0, '', self.drop_rate)
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
