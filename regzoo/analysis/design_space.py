"""The paper's design spaces (AnyNetX A-E -> RegNet -> RegNetX / RegNetY) and seeded sampling inside a flops regime.

A design space is data: a frozen dataclass of parameter ranges (each with its sampling law and
quantum, as pycls's ``sweep/samplers.py``) plus the constraints of the paper (Radosavovic et al.
2020, sections 3-4). ``sample`` draws distinct configs whose *analytic* flops (``regzoo.complexity``)
lie in a regime, reproducibly from a seed. RegNet samples are ``RegNetCfg``s and build with
``regzoo.RegNet(cfg)`` like any registered arch; AnyNet samples are ``AnyNetCfg``s (free per-stage
widths), which are sampled and counted but not buildable: ``RegNet`` only takes linear-rule cfgs.

Bottleneck ratios follow regzoo/pycls (``bottle_ratio`` = bottleneck width / block width), so the
paper's b in {1, 2, 4} is ``bottle_ratio`` in {1, 1/2, 1/4}.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import torch.nn as nn

from regzoo.analysis.complexity import BlockOptions, complexity, stage_complexity
from regzoo.analysis.design_analysis import (  # noqa: F401  (the analysis half of the design-space API)
    LinearFit,
    error_edf,
    fit_good_models,
    fit_quantized_linear,
    per_block_widths,
    write_edf,
)
from regzoo.models.design import (
    RegNetCfg,
    StageSpec,
    adjust_block_compatibility,
    linear_rule,
    make_stages,
    stage_strides,
)

LAWS = ('uniform', 'log_uniform', 'power2', 'power2_or_log')
_BATCH = 1024  # draws per vectorized batch; part of what a seed means, so fixed


def _decimals(q: int | float) -> int:
    return max(0, -Decimal(str(q)).as_tuple().exponent)


@dataclass(frozen=True)
class ParamRange:
    """A closed range ``[low, high]`` sampled by ``law`` and quantized to multiples of ``quantum``.

    The laws are pycls's (``sweep/random.py``): ``log_uniform`` and ``power2_or_log`` give a log-linear
    CDF, as its ``regnet_sampler`` uses for w0 / wa / wm / group width; ``power2`` draws uniformly
    among the powers of two in the range. An int quantum gives ints.
    """
    low: int | float
    high: int | float
    quantum: int | float
    law: str = 'uniform'

    def __post_init__(self):
        if self.law not in LAWS:
            raise ValueError(f'ParamRange.law={self.law!r} is invalid: must be one of {LAWS}')
        if not (0 < self.quantum and self.low <= self.high and (self.low > 0 or self.law == 'uniform')):
            raise ValueError(f'{self} is invalid: needs quantum > 0, low <= high, and low > 0 unless uniform')

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        low, high, q = self.low, self.high, self.quantum
        if self.law == 'uniform':  # draw [low, high + q) and round down: each multiple equally likely
            values = np.floor(rng.uniform(low, high + q, size) / q) * q
        elif self.law == 'log_uniform':
            values = _log_uniform(rng, low, high, q, size)
        elif self.law == 'power2':
            values = np.floor(_power2(rng, low, high, size) / q) * q
        else:  # a power of two below the quantum, else a log-uniform multiple of the quantum
            powers = _power2(rng, low, high, size)
            values = np.where(powers >= q, _log_uniform(rng, max(low, q), high, min(high, q), size), powers)
        # rounding to the quantum's decimals makes 0.1-quanta give 24.5, not 24.500000000000004
        values = np.round(values, _decimals(q))
        return values.astype(np.int64) if isinstance(q, int) else values

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _power2(rng: np.random.Generator, low, high, size) -> np.ndarray:
    return 2.0 ** np.floor(rng.uniform(math.log2(low), math.log2(high) + 1, size))


def _log_uniform(rng: np.random.Generator, low, high, q, size) -> np.ndarray:
    # draw (low - q*, high] then round up, q* = min(q, low/2): every multiple in range gets its log share
    values = np.exp(rng.uniform(math.log(low - min(q, low / 2)), math.log(high), size))
    return np.ceil(values / q) * q


def _valid_stage_structure(
        depth: np.ndarray, w0: np.ndarray, wa: np.ndarray, wm: np.ndarray, num_stages: tuple[int, int],
) -> np.ndarray:
    """pycls's ``check_regnet_constraints``, vectorized: the quantized stage indices of the linear rule
    (``design.linear_rule``) are 0..n-1 with n distinct widths (no skipped index, no two indices
    rounding to one width) and n is within ``num_stages``."""
    j = np.arange(int(depth.max()))[None, :]
    in_net = j < depth[:, None]
    ks, widths = linear_rule(w0[:, None].astype(float), wa[:, None], wm[:, None], j)
    widths = np.where(in_net, widths, np.inf)
    widths = np.sort(widths, 1)
    with np.errstate(invalid='ignore'):  # inf - inf past each net's depth, masked out below
        steps = np.diff(widths, axis=1) != 0
    distinct = 1 + (steps & np.isfinite(widths[:, 1:])).sum(1)
    indices = np.where(in_net, ks, -1).max(1) + 1
    return (distinct == indices) & (num_stages[0] <= distinct) & (distinct <= num_stages[1])


@dataclass(frozen=True)
class RegNetSpace:
    """A RegNet design space: ranges of the six linear-rule parameters plus constraints."""
    name: str
    depth: ParamRange
    w0: ParamRange
    wa: ParamRange
    wm: ParamRange
    group_size: ParamRange
    bottle_ratio: ParamRange
    se_ratio: float = 0.0
    num_stages: tuple[int, int] = (4, 4)

    def draw(self, rng: np.random.Generator, size: int) -> list[RegNetCfg]:
        """``size`` independent draws, keeping those whose stage structure is valid (vectorized: the
        4-stage rule rejects most draws, so it runs before any ``RegNetCfg`` is made)."""
        d, w0, wa, wm, g, b = (r.sample(rng, size) for r in (
            self.depth, self.w0, self.wa, self.wm, self.group_size, self.bottle_ratio))
        keep = _valid_stage_structure(d, w0, wa, wm, self.num_stages)
        return [RegNetCfg(depth=int(d[i]), w0=int(w0[i]), wa=float(wa[i]), wm=float(wm[i]), group_size=int(g[i]),
                          bottle_ratio=float(b[i]), se_ratio=self.se_ratio) for i in np.flatnonzero(keep)]

    def violations(self, cfg: RegNetCfg) -> list[str]:
        """What puts ``cfg`` outside this space (empty when inside)."""
        out = [f'{f}={getattr(cfg, f)} not in [{r.low}, {r.high}]'
               for f, r in (('depth', self.depth), ('w0', self.w0), ('wa', self.wa), ('wm', self.wm),
                            ('group_size', self.group_size), ('bottle_ratio', self.bottle_ratio))
               if not r.contains(getattr(cfg, f))]
        if cfg.se_ratio != self.se_ratio:
            out.append(f'se_ratio={cfg.se_ratio} != {self.se_ratio}')
        if not _valid_stage_structure(*(np.array([v]) for v in (cfg.depth, cfg.w0, cfg.wa, cfg.wm)),
                                      self.num_stages)[0]:
            n = len(make_stages(cfg))
            out.append(f'{n} stages with gaps or merged widths; need {self.num_stages[0]}..{self.num_stages[1]} stages')
        return out

    def complexity(self, cfg: RegNetCfg, img_size: int = 224) -> dict[str, int]:
        return complexity(cfg, img_size)


@dataclass(frozen=True)
class AnyNetCfg:
    """A point of AnyNetX: free depth, width, bottleneck ratio and group width per stage."""
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    bottle_ratios: tuple[float, ...]
    group_sizes: tuple[int, ...]
    se_ratio: float = 0.0

    def stages(self) -> tuple[StageSpec, ...]:
        # the same group compatibility rounding RegNets get (pycls would silently floor the groups)
        widths, groups = adjust_block_compatibility(list(self.widths), list(self.bottle_ratios), list(self.group_sizes))
        return tuple(StageSpec(w, d, s, dil, g, b) for w, d, (s, dil), g, b in zip(
            widths, self.depths, stage_strides(len(widths)), groups, self.bottle_ratios))


@dataclass(frozen=True)
class AnyNetSpace:
    """AnyNetX and its constrained refinements (paper section 3.2): A free, B shared b, C shared g,
    D non-decreasing widths, E non-decreasing depths."""
    name: str
    shared_bottle_ratio: bool = False
    shared_group_size: bool = False
    increasing_widths: bool = False
    increasing_depths: bool = False
    num_stages: int = 4
    depth: ParamRange = ParamRange(1, 16, 1, 'uniform')
    width: ParamRange = ParamRange(8, 1024, 8, 'log_uniform')
    bottle_ratio: ParamRange = ParamRange(0.25, 1.0, 0.25, 'power2')
    group_size: ParamRange = ParamRange(1, 32, 1, 'power2')
    se_ratio: float = 0.0

    def draw(self, rng: np.random.Generator, size: int) -> list[AnyNetCfg]:
        n = self.num_stages
        shape = lambda shared: (size, 1) if shared else (size, n)  # noqa: E731
        depths = self.depth.sample(rng, (size, n))
        widths = self.width.sample(rng, (size, n))
        ratios = np.broadcast_to(self.bottle_ratio.sample(rng, shape(self.shared_bottle_ratio)), (size, n))
        groups = np.broadcast_to(self.group_size.sample(rng, shape(self.shared_group_size)), (size, n))
        # the paper's refinements are constraints; sorting a free draw samples the constrained space
        widths = np.sort(widths, 1) if self.increasing_widths else widths
        depths = np.sort(depths, 1) if self.increasing_depths else depths
        return [AnyNetCfg(tuple(map(int, d)), tuple(map(int, w)), tuple(map(float, b)), tuple(map(int, g)),
                          self.se_ratio) for d, w, b, g in zip(depths, widths, ratios, groups)]

    def violations(self, cfg: AnyNetCfg) -> list[str]:
        out = []
        if len(cfg.depths) != self.num_stages:
            out.append(f'{len(cfg.depths)} stages, need {self.num_stages}')
        if self.shared_bottle_ratio and len(set(cfg.bottle_ratios)) > 1:
            out.append(f'bottle_ratios {cfg.bottle_ratios} not shared')
        if self.shared_group_size and len(set(cfg.group_sizes)) > 1:
            out.append(f'group_sizes {cfg.group_sizes} not shared')
        if self.increasing_widths and list(cfg.widths) != sorted(cfg.widths):
            out.append(f'widths {cfg.widths} decrease')
        if self.increasing_depths and list(cfg.depths) != sorted(cfg.depths):
            out.append(f'depths {cfg.depths} decrease')
        return out

    def complexity(self, cfg: AnyNetCfg, img_size: int = 224) -> dict[str, int]:
        return stage_complexity(cfg.stages(), BlockOptions(se_ratio=cfg.se_ratio), img_size)


def _anynet(letter: str, **constraints) -> AnyNetSpace:
    return AnyNetSpace(f'AnyNetX{letter}', **constraints)


ANYNET_XA = _anynet('A')
ANYNET_XB = _anynet('B', shared_bottle_ratio=True)
ANYNET_XC = _anynet('C', shared_bottle_ratio=True, shared_group_size=True)
ANYNET_XD = _anynet('D', shared_bottle_ratio=True, shared_group_size=True, increasing_widths=True)
ANYNET_XE = _anynet('E', shared_bottle_ratio=True, shared_group_size=True, increasing_widths=True,
                    increasing_depths=True)
# section 3.3: AnyNetXE restricted to the quantized linear rule, d < 64, w0, wa < 256, 1.5 <= wm <= 3
REGNET = RegNetSpace(
    'RegNet', depth=ParamRange(1, 63, 1), w0=ParamRange(8, 256, 8, 'log_uniform'),
    wa=ParamRange(0.1, 256.0, 0.1, 'log_uniform'), wm=ParamRange(1.5, 3.0, 0.001, 'log_uniform'),
    group_size=ParamRange(1, 32, 1, 'power2'), bottle_ratio=ParamRange(0.25, 1.0, 0.25, 'power2'))
# section 4: b = 1, d <= 40, wm >= 2 (the ranges pycls's regnet_sampler defaults to for <= 16GF:
# d in [12, 28], w0 / wa in [8, 256], group width in [8, 128], which holds every published RegNetX <= 16GF)
REGNETX = RegNetSpace(
    'RegNetX', depth=ParamRange(12, 28, 1), w0=ParamRange(8, 256, 8, 'log_uniform'),
    wa=ParamRange(8.0, 256.0, 0.1, 'log_uniform'), wm=ParamRange(2.0, 3.0, 0.001, 'log_uniform'),
    group_size=ParamRange(8, 128, 8, 'power2_or_log'), bottle_ratio=ParamRange(1.0, 1.0, 1.0, 'power2'))
REGNETY = dataclasses.replace(REGNETX, name='RegNetY', se_ratio=0.25)  # RegNetX + SE (section 5)
DESIGN_SPACES = {s.name: s for s in (
    ANYNET_XA, ANYNET_XB, ANYNET_XC, ANYNET_XD, ANYNET_XE, REGNET, REGNETX, REGNETY)}


def flops_regime(regime: str | tuple[float, float]) -> tuple[float, float]:
    """``'400MF'`` -> (360e6, 400e6): the paper samples each regime from 90% to 100% of its name."""
    if isinstance(regime, tuple) and len(regime) == 2 and 0 <= regime[0] < regime[1]:
        return float(regime[0]), float(regime[1])
    match = re.fullmatch(r'(\d+(?:\.\d+)?)(MF|GF)', regime) if isinstance(regime, str) else None
    if not match:
        raise ValueError(f'flops regime {regime!r} is invalid: use e.g. "400MF", "3.2GF" or (low, high) flops')
    top = float(match[1]) * (1e6 if match[2] == 'MF' else 1e9)
    return 0.9 * top, top


def sample(
        space: RegNetSpace | AnyNetSpace | str, n: int, regime: str | tuple[float, float] = '400MF', seed: int = 0,
        img_size: int = 224, max_draws: int = 1_000_000,
) -> list[RegNetCfg | AnyNetCfg]:
    """``n`` distinct configs of ``space`` with analytic flops in ``regime``; the same seed gives the same list."""
    if isinstance(space, str):
        if space not in DESIGN_SPACES:
            raise ValueError(f'unknown design space {space!r}; known: {", ".join(DESIGN_SPACES)}')
        space = DESIGN_SPACES[space]
    low, high = flops_regime(regime)
    rng = np.random.default_rng(seed)
    found: dict[RegNetCfg | AnyNetCfg, None] = {}  # insertion-ordered set
    for _ in range(0, max_draws, _BATCH):
        for cfg in space.draw(rng, _BATCH):
            if cfg not in found and low <= space.complexity(cfg, img_size)['flops'] <= high:
                found[cfg] = None
                if len(found) == n:
                    return list(found)
    raise RuntimeError(
        f'{space.name}: only {len(found)} of {n} configs in [{low:.4g}, {high:.4g}] flops after {max_draws} draws')


def build(cfg: RegNetCfg, **kwargs) -> nn.Module:
    """A sampled RegNet cfg as a regular model (``regzoo.RegNet(cfg, **kwargs)``)."""
    if not isinstance(cfg, RegNetCfg):
        raise TypeError(
            f'only RegNetCfg samples build (got {type(cfg).__name__}): AnyNet per-stage widths do not follow '
            'the linear rule RegNet is built from; count them with their space.complexity(cfg)')
    from regzoo.models.regnet import RegNet
    return RegNet(cfg, **kwargs)

