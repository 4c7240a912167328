"""RegNet design-space math: a frozen config and pure functions from it to per-stage specs.

A RegNet is a point (w0, wa, wm, depth, group_size, bottle_ratio) of the design space of
"Designing Network Design Spaces" (Radosavovic et al. 2020, https://arxiv.org/abs/2003.13678).
Per-block widths follow the quantized linear rule

    u_j = w0 + wa * j                        (continuous widths, j = 0 .. depth-1)
    s_j = round(log(u_j / w0) / log(wm))     (the stage each block belongs to)
    w_j = q * round(w0 * wm**s_j / q)        (quantized to multiples of q = 8)

and blocks of equal width form a stage. Widths are then made compatible with the group width
(Appendix D of the paper): the bottleneck width must be a multiple of the group width.
Two roundings exist in the wild and give different networks for three of the published sizes:
pycls/timm round to the *nearest* multiple; torchvision never goes below 90% of the original
(``group_min_ratio=0.9``, the ``_tv`` variants).

A ``RegNetCfg`` may instead give its stages explicitly (``stage_widths``, ``stage_depths``: the form of
HF transformers' ``RegNetConfig`` ``hidden_sizes`` / ``depths``, for nets no linear rule describes); see
``RegNetCfg.from_stages``.

Nothing here builds a module: ``make_stages`` is the single source of widths, depths, strides
and groups, and ``make_blocks`` of each block's shape (stride, dilation, SE width, shortcut), for
the model, the complexity counter and the design-space sampler.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ACTIVATIONS = ('relu', 'silu', 'gelu')
NORMS = ('batchnorm',)
DOWNSAMPLES = ('conv1x1', 'avg', None)
OUTPUT_STRIDES = (8, 16, 32)
WIDTH_QUANTUM = 8  # the paper's q: every per-block width is a multiple of 8


@dataclass(frozen=True)
class RegNetCfg:
    """One point of the RegNet design space plus the block options around it.

    Two forms of the stages, one type:

    * the quantized linear rule (the default): ``depth``, ``w0``, ``wa``, ``wm`` give the per-block widths,
      which ``make_stages`` groups into stages and rounds to the group width (``group_min_ratio``);
    * explicit stages: ``stage_widths`` and ``stage_depths`` (both, one entry per stage) are used as given,
      with no quantization and no group rounding. ``depth``, ``w0``, ``wa``, ``wm`` and ``group_min_ratio``
      are then **unused** (``from_stages`` fills them with placeholders; the design-space analysis, which
      reads them, is only meaningful for the linear form). Each stage's 3x3 conv has
      ``max(1, bottleneck // group_size)`` groups (HF transformers' rule), which must divide the bottleneck.

    Overrides go through ``dataclasses.replace`` (or ``cfg.replace(...)``): an unknown field raises.
    """
    depth: int                     # total number of blocks, d
    w0: int                        # initial width, a multiple of 8
    wa: float                      # width slope
    wm: float                      # width multiplier between stages (> 1)
    group_size: int                # channels per group in the 3x3 conv (the paper's g)
    bottle_ratio: float = 1.0      # bottleneck width / block width (the paper's b; RegNetZ uses 4)
    se_ratio: float = 0.0          # SE width / *block input* width; 0 disables SE (X), 0.25 for Y
    group_min_ratio: float = 0.0   # 0: pycls rounding; 0.9: torchvision make-divisible rounding
    stem_width: int = 32
    downsample: str | None = 'conv1x1'  # shortcut projection; None: no shortcut where shapes change
    linear_out: bool = False       # no activation after the residual add (RegNetZ)
    preact: bool = False           # pre-activation blocks (RegNetV)
    num_features: int = 0          # width of an extra 1x1 conv before the head; 0: none
    act: str = 'relu'
    norm: str = 'batchnorm'
    stage_widths: tuple[int, ...] | None = None  # explicit stages (see above); None: the linear rule
    stage_depths: tuple[int, ...] | None = None

    def __post_init__(self):
        def fail(field: str, why: str):
            raise ValueError(f'RegNetCfg.{field}={getattr(self, field)!r} is invalid: {why}')

        _check_int(self, 'depth'), _check_int(self, 'w0'), _check_int(self, 'group_size')
        _check_int(self, 'stem_width'), _check_int(self, 'num_features')
        if self.depth < 1:
            fail('depth', 'must be >= 1')
        if self.w0 <= 0 or self.w0 % WIDTH_QUANTUM:
            fail('w0', f'must be > 0 and a multiple of {WIDTH_QUANTUM}')
        if not self.wa >= 0:
            fail('wa', 'must be >= 0')
        if not self.wm > 1:
            fail('wm', 'must be > 1')
        if self.group_size < 1:
            fail('group_size', 'must be >= 1')
        if not self.bottle_ratio > 0 or (self.bottle_ratio > 1 and self.bottle_ratio % 1):
            fail('bottle_ratio', 'must be > 0, and a whole number when > 1')
        if not 0 <= self.se_ratio < 1:
            fail('se_ratio', 'must be in [0, 1)')
        if not 0 <= self.group_min_ratio < 1:
            fail('group_min_ratio', 'must be in [0, 1): 0 for pycls rounding, 0.9 for torchvision')
        if self.stem_width < 1:
            fail('stem_width', 'must be >= 1')
        if self.num_features < 0:
            fail('num_features', 'must be >= 0')
        if self.downsample not in DOWNSAMPLES:
            fail('downsample', f'must be one of {DOWNSAMPLES}')
        if self.act not in ACTIVATIONS:
            fail('act', f'must be one of {ACTIVATIONS}')
        if self.norm not in NORMS:
            fail('norm', f'must be one of {NORMS}')
        self._check_explicit_stages(fail)

    def _check_explicit_stages(self, fail) -> None:
        if self.stage_widths is None and self.stage_depths is None:
            return
        for name in ('stage_widths', 'stage_depths'):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                fail(name, 'explicit stages need both stage_widths and stage_depths, each a non-empty sequence '
                           'of ints >= 1')
            # a list (a config.json's model_args) becomes a tuple, so the frozen cfg stays hashable
            object.__setattr__(self, name, tuple(value))
        if len(self.stage_widths) != len(self.stage_depths):
            fail('stage_depths', f'must have one entry per stage: {len(self.stage_widths)} stage_widths')
        for width in self.stage_widths:
            bottleneck = int(round(width * self.bottle_ratio))
            groups = max(1, bottleneck // self.group_size)
            if bottleneck < 1 or bottleneck % groups:
                fail('stage_widths', f'stage width {width} has a bottleneck of {bottleneck} channels, not divisible '
                                     f'into its max(1, {bottleneck} // group_size {self.group_size}) = {groups} groups')

    @classmethod
    def from_stages(cls, stage_widths: Sequence[int], stage_depths: Sequence[int], group_size: int,
                    **options) -> RegNetCfg:
        """A cfg with explicit stages (widths and depths used as given); ``options`` are the other fields.

        The linear-rule fields, unused in this form, get placeholders: ``depth`` = the number of blocks,
        ``w0`` = 8, ``wa`` = 0, ``wm`` = 2.
        """
        depths = tuple(stage_depths)  # __post_init__ checks them; a bad one must not fail in sum() first
        total = sum(depths) if all(isinstance(d, int) for d in depths) else 1
        return cls(depth=max(1, total), w0=WIDTH_QUANTUM, wa=0.0, wm=2.0, group_size=group_size,
                   stage_widths=tuple(stage_widths), stage_depths=depths, **options)

    @property
    def has_explicit_stages(self) -> bool:
        """True when ``stage_widths`` / ``stage_depths`` give the stages (the linear-rule fields are unused)."""
        return self.stage_widths is not None

    def replace(self, **changes) -> RegNetCfg:
        """A copy with ``changes`` applied; unknown fields raise TypeError naming them."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f'RegNetCfg has no field(s) {unknown}')
        return dataclasses.replace(self, **changes)


def _check_int(cfg: RegNetCfg, field: str) -> None:
    value = getattr(cfg, field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'RegNetCfg.{field}={value!r} is invalid: must be an int')


@dataclass(frozen=True)
class StageSpec:
    """Everything needed to build one stage: ``depth`` blocks of ``width`` output channels."""
    width: int
    depth: int
    stride: int
    dilation: int
    group_size: int
    bottle_ratio: float

    @property
    def bottleneck_width(self) -> int:
        return int(round(self.width * self.bottle_ratio))

    @property
    def groups(self) -> int:
        return self.bottleneck_width // self.group_size


def quantize_float(f: float, q: int) -> int:
    """The nearest multiple of ``q`` (pycls rounding)."""
    return int(round(f / q) * q)


def make_divisible(v: float, divisor: int, round_limit: float = 0.9) -> int:
    """The nearest multiple of ``divisor`` that is not below ``round_limit * v`` (torchvision rounding)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def linear_rule(w0, wa, wm, j, q: int = WIDTH_QUANTUM) -> tuple[np.ndarray, np.ndarray]:
    """(s_j, w_j) of the quantized linear rule for block indices ``j``, broadcasting numpy arrays.

    The one implementation of the rule: ``block_widths`` and the design-space sampler and fit call it.
    numpy, as pycls's and timm's ``generate_regnet``, so the float roundings (a ``.5`` stage index is
    rare but real) are theirs exactly.
    """
    stage = np.round(np.log((w0 + wa * j) / w0) / np.log(wm))
    return stage, np.round(w0 * np.power(wm, stage) / q) * q


def block_widths(wa: float, w0: int, wm: float, depth: int, q: int = WIDTH_QUANTUM) -> list[int]:
    """Per-block widths from the quantized linear rule (pycls ``generate_regnet``)."""
    return linear_rule(w0, wa, wm, np.arange(depth), q)[1].astype(int).tolist()


def adjust_block_compatibility(
        widths: list[int], bottle_ratios: list[float], group_sizes: list[int], group_min_ratio: float = 0.0,
) -> tuple[list[int], list[int]]:
    """Make each bottleneck width a multiple of its group size (and of the bottle ratio when > 1).

    The group size is first capped at the bottleneck width. Returns (widths, group_sizes).
    """
    bottlenecks = [int(max(1, w * b)) for w, b in zip(widths, bottle_ratios)]
    group_sizes = [min(g, v) for g, v in zip(group_sizes, bottlenecks)]
    # with b > 1 the block width v / b must stay whole, so round to a multiple of lcm(g, b) (pycls)
    multiples = [math.lcm(g, int(b)) if b > 1 else g for g, b in zip(group_sizes, bottle_ratios)]
    if group_min_ratio:
        bottlenecks = [make_divisible(v, m, group_min_ratio) for v, m in zip(bottlenecks, multiples)]
    else:
        bottlenecks = [max(m, quantize_float(v, m)) for v, m in zip(bottlenecks, multiples)]
    widths = [int(v / b) for v, b in zip(bottlenecks, bottle_ratios)]
    assert all(int(round(w * b)) % g == 0 for w, b, g in zip(widths, bottle_ratios, group_sizes))
    return widths, group_sizes


def stage_strides(num_stages: int, output_stride: int = 32, stem_stride: int = 2) -> list[tuple[int, int]]:
    """(stride, dilation) per stage: stride 2 each until ``output_stride`` is reached, then dilate instead."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f'output_stride={output_stride!r} is invalid: must be one of {OUTPUT_STRIDES}')
    out, net_stride, dilation = [], stem_stride, 1
    for _ in range(num_stages):
        if net_stride >= output_stride:
            dilation *= 2
            out.append((1, dilation))
        else:
            net_stride *= 2
            out.append((2, dilation))
    return out


def make_stages(cfg: RegNetCfg, output_stride: int = 32) -> tuple[StageSpec, ...]:
    """The per-stage specs of ``cfg``: blocks of equal width grouped into stages, widths made group-compatible
    (or, with explicit stages, the stages as given)."""
    if cfg.has_explicit_stages:
        return _explicit_stages(cfg, output_stride)
    widths = block_widths(cfg.wa, cfg.w0, cfg.wm, cfg.depth)
    stage_widths = sorted(set(widths))
    stage_depths = [widths.count(w) for w in stage_widths]
    n = len(stage_widths)
    ratios = [cfg.bottle_ratio] * n
    stage_widths, group_sizes = adjust_block_compatibility(
        stage_widths, ratios, [cfg.group_size] * n, cfg.group_min_ratio)
    return tuple(
        StageSpec(width=w, depth=d, stride=s, dilation=dil, group_size=g, bottle_ratio=b)
        for w, d, (s, dil), g, b in zip(
            stage_widths, stage_depths, stage_strides(n, output_stride), group_sizes, ratios))


def _explicit_stages(cfg: RegNetCfg, output_stride: int) -> tuple[StageSpec, ...]:
    """``cfg``'s explicit stages: widths as given, max(1, bottleneck // group_size) groups per 3x3 conv
    (HF transformers' rule; ``__post_init__`` checked they divide the bottleneck)."""
    specs = []
    strides = stage_strides(len(cfg.stage_widths), output_stride)
    for width, depth, (stride, dilation) in zip(cfg.stage_widths, cfg.stage_depths, strides):
        bottleneck = int(round(width * cfg.bottle_ratio))
        # the channels per group that gives those groups, so StageSpec.groups is the conv's group count
        group_size = bottleneck // max(1, bottleneck // cfg.group_size)
        specs.append(StageSpec(width=width, depth=depth, stride=stride, dilation=dilation, group_size=group_size,
                               bottle_ratio=cfg.bottle_ratio))
    return tuple(specs)


@dataclass(frozen=True)
class BlockSpec:
    """One residual block: what ``regnet.Bottleneck`` / ``PreBottleneck`` build and ``complexity`` counts."""
    in_chs: int
    out_chs: int
    bottleneck_width: int
    groups: int            # of the 3x3 conv
    stride: int            # of the 3x3 conv and the shortcut
    dilation: int          # of the 3x3 conv (a dilated stage's first block keeps the previous dilation)
    se_width: int | None   # the SE's reduced width; None: no SE
    shortcut: str | None   # 'identity', a projection (one of DOWNSAMPLES), or None: no residual at all


def block_specs(stage: StageSpec, in_chs: int, se_ratio: float = 0.0,
                downsample: str | None = 'conv1x1') -> tuple[BlockSpec, ...]:
    """The blocks of ``stage`` when ``in_chs`` channels come into it; the first one changes width and stride."""
    mid, groups = stage.bottleneck_width, stage.groups

    def block(chs: int, stride: int, dilation: int) -> BlockSpec:
        keeps_shape = chs == stage.width and stride == 1 and dilation == stage.dilation
        return BlockSpec(
            in_chs=chs, out_chs=stage.width, bottleneck_width=mid, groups=groups, stride=stride, dilation=dilation,
            # SE width from the block's *input* width, not the bottleneck's (pycls / timm)
            se_width=int(round(chs * se_ratio)) if se_ratio else None,
            shortcut='identity' if keeps_shape else downsample)

    # the first block of a dilated stage still sees the previous stage's dilation (as timm)
    first = block(in_chs, stage.stride, 1 if stage.dilation in (1, 2) else 2)
    # the others are all alike (frozen, so one instance serves them all: complexity sampling makes many)
    return (first,) + (block(stage.width, 1, stage.dilation),) * (stage.depth - 1)


def make_blocks(stages: Sequence[StageSpec], stem_width: int, se_ratio: float = 0.0,
                downsample: str | None = 'conv1x1') -> tuple[tuple[BlockSpec, ...], ...]:
    """``block_specs`` of every stage, each fed by the one before it (the first by the stem)."""
    out, in_chs = [], stem_width
    for stage in stages:
        out.append(block_specs(stage, in_chs, se_ratio, downsample))
        in_chs = stage.width
    return tuple(out)
