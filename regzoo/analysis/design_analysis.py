"""Analysing a sampled design space: error EDFs (CSV + plot) and the quantized linear fit of good models.

The paper compares design spaces by the empirical distribution function of model error,
F(e) = fraction of models with error < e, of ~100 models sampled per space (its figures 2-9).
It then describes the per-block widths of good models with the quantized linear rule
(``design.block_widths``), fitting (w0, wa, wm) by grid search to minimize e_fit, the mean
absolute log-ratio of predicted to observed widths (section 3.3). Works for ``RegNetCfg`` and
``design_space.AnyNetCfg`` alike.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regzoo.analysis.complexity import BlockOptions, complexity, stage_complexity
from regzoo.models.design import WIDTH_QUANTUM, RegNetCfg, StageSpec, linear_rule, make_stages
from regzoo.utils.extras import require

Result = tuple  # (cfg, error): a RegNetCfg or AnyNetCfg and its top-1 error in %


def stages_of(cfg) -> tuple[StageSpec, ...]:
    return make_stages(cfg) if isinstance(cfg, RegNetCfg) else cfg.stages()


def per_block_widths(cfg) -> list[int]:
    """The width of every block, first to last (what the quantized linear rule describes)."""
    return [s.width for s in stages_of(cfg) for _ in range(s.depth)]


def _complexity(cfg) -> dict[str, int]:
    if isinstance(cfg, RegNetCfg):
        return complexity(cfg)
    return stage_complexity(cfg.stages(), BlockOptions(se_ratio=cfg.se_ratio))


def error_edf(errors: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted errors and F at each: the i-th smallest error has F = i / n."""
    errs = np.sort(np.asarray(errors, dtype=float))
    if errs.size == 0 or not np.isfinite(errs).all():
        raise ValueError(f'errors must be a non-empty list of finite numbers, got {list(errors)[:5]}...')
    return errs, np.arange(1, errs.size + 1) / errs.size


def write_edf(
        results: Sequence[Result] | Mapping[str, Sequence[Result]], out_dir: str | Path, name: str = 'edf',
) -> dict[str, Path]:
    """Write ``{name}.csv`` (one row per model, sorted by error, with its EDF value, complexity and
    cfg) and ``{name}.png`` (one EDF curve per design space, legend n | min | mean as pycls).

    ``results`` is a list of (cfg, error) pairs, or a mapping label -> list to compare spaces.
    """
    sets = dict(results) if isinstance(results, Mapping) else {'models': results}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    for label, pairs in sets.items():
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f'{label}: expected (cfg, error) pairs, got {pair!r}')
        errs, edf = error_edf([e for _, e in pairs])
        curves[label] = (errs, edf)
        ranked = sorted(pairs, key=lambda p: p[1])
        for rank, ((cfg, err), f) in enumerate(zip(ranked, edf), 1):
            stages = stages_of(cfg)
            rows.append(dict(
                space=label, rank=rank, error=err, edf=round(float(f), 6), **_complexity(cfg),
                stage_depths=' '.join(str(s.depth) for s in stages),
                stage_widths=' '.join(str(s.width) for s in stages),
                cfg=json.dumps(dict(type=type(cfg).__name__, **dataclasses.asdict(cfg)))))
    csv_path, png_path = out_dir / f'{name}.csv', out_dir / f'{name}.png'
    with open(csv_path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot_edf(curves, png_path)
    return dict(csv=csv_path, png=png_path)


def _plot_edf(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    require('matplotlib', 'plot', 'plotting an EDF').use('Agg')  # files only, never a window
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for label, (errs, edf) in curves.items():
        # a step function: F jumps at each observed error
        ax.step(errs, edf, where='post', label=f'{label} ({errs.size} | {errs.min():.1f} | {errs.mean():.1f})')
    ax.set_xlabel('error (%)')
    ax.set_ylabel('cumulative prob.')
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.4)
    ax.legend(loc='lower right', title='space (n | min | mean)', fontsize=7, title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass(frozen=True)
class LinearFit:
    """Quantized linear parameters fitted to per-block widths, and the fit's e_fit (0 = exact)."""
    w0: int
    wa: float
    wm: float
    e_fit: float
    num_models: int

    def widths(self, depth: int) -> list[int]:
        return _predict(np.array([self.wa]), np.array([self.wm]), self.w0, depth)[0, 0].astype(int).tolist()


def _predict(was: np.ndarray, wms: np.ndarray, w0: int, depth: int) -> np.ndarray:
    """Quantized linear widths, shape (len(was), len(wms), depth): ``design.linear_rule`` on the grid."""
    return linear_rule(w0, was[:, None, None], wms[None, :, None], np.arange(depth)[None, None, :])[1]


def fit_quantized_linear(
        widths: Sequence[Sequence[int]], wa_grid: np.ndarray | None = None, wm_grid: np.ndarray | None = None,
) -> LinearFit:
    """One (w0, wa, wm) for the per-block widths of one or more models (each keeps its own depth).

    Grid search as in the paper: w0 over multiples of 8 near the first widths (the rule's first
    width is w0 itself), wa log-spaced in [1, 512], wm in [1.5, 3] by 0.01; minimizes the mean
    over models of e_fit = mean |log(predicted / observed)|.
    """
    models = [np.asarray(w, dtype=float) for w in widths]
    if not models or any(m.size == 0 or (m <= 0).any() for m in models):
        raise ValueError('widths must be a non-empty list of non-empty lists of positive block widths')
    was = np.geomspace(1.0, 512.0, 241) if wa_grid is None else np.asarray(wa_grid, dtype=float)
    wms = np.round(np.arange(1.5, 3.0 + 1e-9, 0.01), 2) if wm_grid is None else np.asarray(wm_grid, dtype=float)
    firsts = {int(m[0]) for m in models}
    w0s = sorted({w for f in firsts for w in range(max(8, f - 16), f + 17, WIDTH_QUANTUM)})
    best = (math.inf, 0, 0.0, 0.0)
    for w0 in w0s:
        e_fit = np.mean([np.abs(np.log(_predict(was, wms, w0, m.size) / m)).mean(-1) for m in models], axis=0)
        i, j = np.unravel_index(np.argmin(e_fit), e_fit.shape)
        if e_fit[i, j] < best[0]:
            best = (float(e_fit[i, j]), w0, float(was[i]), float(wms[j]))
    return LinearFit(w0=best[1], wa=round(best[2], 3), wm=best[3], e_fit=best[0], num_models=len(models))


def fit_good_models(results: Sequence[Result], top_fraction: float = 0.25) -> LinearFit:
    """The quantized linear fit of the best ``top_fraction`` of (cfg, error) results (at least one model)."""
    if not 0 < top_fraction <= 1:
        raise ValueError(f'top_fraction={top_fraction!r} is invalid: must be in (0, 1]')
    if not results:
        raise ValueError('results is empty: need (cfg, error) pairs')
    ranked = sorted(results, key=lambda p: p[1])
    good = ranked[:max(1, round(len(ranked) * top_fraction))]
    return fit_quantized_linear([per_block_widths(cfg) for cfg, _ in good])
