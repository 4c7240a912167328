"""The measurements behind ``python -m regzoo.benchmark``: timm eager, regzoo eager, regzoo's fast path and the
other inference engines (``regzoo.deploy.engines``: ONNX Runtime, OpenVINO, 'auto'), same weights, one process,
interleaved rounds (``regzoo.utils.timing``), batch-1 latency, peak memory (``regzoo.utils.profiling``) and, for
lossy variants, top-1 agreement with fp32 after a ridge probe.

To add a variant, add an entry to ``VARIANTS``: a builder from the ``Shared`` weights to a callable model, its
dtype, when it runs by default, and the engine it runs on (``ENGINE_VARIANTS`` names the engine rows).
"""
from __future__ import annotations

import contextlib
import statistics
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

from regzoo.analysis.complexity import complexity
from regzoo.data.synthetic import synthetic_batch
from regzoo.deploy.engines_choice import require_engine
from regzoo.deploy.inference import torch_fast_path
from regzoo.utils.extras import MissingExtraError
from regzoo.eval.loop import top1_agreement
from regzoo.models.layers import randomize_bn
from regzoo.utils.machine import Machine
from regzoo.utils.profiling import peak_memory_mb
from regzoo.utils.timing import SETTLE, paired_ratio, spread_pct, timed_interleaved
from regzoo.zoo.builder import create_model

ROW_COLUMNS = ('model', 'mode', 'variant', 'dtype', 'memory_format', 'batch_size', 'img_size', 'img_per_s',
               'engine', 'median_ms', 'spread_pct', 'ratio_vs_timm', 'ratio_vs_fastest', 'gflops', 'pct_fp32_peak',
               'latency_bs1_ms', 'peak_mem_mb', 'top1_agree_vs_fp32', 'rounds')


@dataclass(frozen=True)
class Shared:
    """What every variant of one model is built from: one set of weights, and the run's settings."""
    regzoo_model: nn.Module  # regzoo eager fp32 (random weights, non-trivial BN; probe head if a lossy variant runs)
    timm_model: nn.Module  # timm's model with the same state dict
    example_input: torch.Tensor  # a timed batch (NCHW)
    calibration_images: torch.Tensor  # generated images the probe head was fitted on (e.g. for int8 calibration)
    memory_format: str  # the fast path's: 'auto', 'channels_last' or 'contiguous'
    compile: bool


@dataclass(frozen=True)
class Variant:
    build: Callable[[Shared], nn.Module]
    dtype: str = 'float32'  # what runs; any other dtype is lossy: its top-1 agreement with fp32 is measured
    default_on: Callable[[Machine], bool] = lambda machine: True  # runs without --variants where this is True
    autocast_bf16: bool = False
    eager: bool = False  # an eager module: --channels-last converts it and its input
    engine: str = 'torch'  # what runs it: an engine of regzoo.deploy.engines, or 'auto' (the row says which ran)


@dataclass(frozen=True)
class BenchSettings:
    """How one model is benchmarked (the command line's flags, spelled out)."""
    batch_size: int = 32
    img_size: int = 224
    train: bool = False  # time a train step (fwd+bwd+SGD) instead of inference
    channels_last: bool = False  # the eager models (and regzoo-opt) run channels_last
    memory_format: str = 'auto'  # regzoo-opt's, without channels_last
    compile: bool = False
    repeats: int = 10  # minimum timed rounds
    min_seconds: float = 10.0
    warmup: int = 3
    latency_repeats: int = 20  # batch-1 rounds; 0: none
    memory: bool = True  # measure peak memory
    agreement_images: int = 256


def _optimized(dtype: str | None) -> Callable[[Shared], nn.Module]:
    def build(s: Shared) -> nn.Module:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', 'optimize_for_inference: this CPU has no native bfloat16')
            return torch_fast_path(s.regzoo_model, memory_format=s.memory_format, dtype=dtype,
                                   compile=s.compile, example_input=s.example_input)
    return build


def _int8(s: Shared) -> nn.Module:
    from regzoo.deploy.quantize import quantize_pt2e  # imported when the variant runs (torchao): --help stays light
    return quantize_pt2e(s.regzoo_model, s.calibration_images)  # oneDNN int8 kernels, calibrated on the probe's images


def _on_engine(engine: str, int8: bool = False) -> Callable[[Shared], nn.Module]:
    """The fp32 (or int8) model of ``engine`` (an ONNX Runtime / OpenVINO session, or 'auto''s pick), built and
    checked against eager by ``regzoo.deploy.engines`` on the timed batch."""
    def build(s: Shared) -> nn.Module:
        from regzoo.deploy.engines import optimize_for_inference, quantize  # when it runs: --help stays light
        if int8:
            return quantize(s.regzoo_model, s.calibration_images, engine=engine, example_input=s.example_input)
        return optimize_for_inference(s.regzoo_model, engine=engine, example_input=s.example_input,
                                      memory_format=s.memory_format, compile=s.compile)
    return build


def _int8_default(machine: Machine) -> bool:
    import importlib.util
    return machine.vnni and importlib.util.find_spec('torchao') is not None  # int8 pays off with VNNI


def _bf16_default(machine: Machine) -> bool:
    return machine.bf16_native


# name -> variant. REFERENCE is the denominator of every ratio; lossy variants' top-1 agreement is measured
# against regzoo eager fp32 (Shared.regzoo_model), whether or not that runs as a variant
VARIANTS: Mapping[str, Variant] = {
    'timm': Variant(lambda s: s.timm_model, eager=True),
    'regzoo': Variant(lambda s: s.regzoo_model, eager=True),
    'regzoo-opt': Variant(_optimized(None)),
    'timm-autocast-bf16': Variant(lambda s: s.timm_model, 'bfloat16', _bf16_default, autocast_bf16=True, eager=True),
    'regzoo-opt-bf16': Variant(_optimized('bfloat16'), 'bfloat16', _bf16_default),
    'regzoo-int8': Variant(_int8, 'int8', _int8_default),
    'regzoo-ort': Variant(_on_engine('onnxruntime'), engine='onnxruntime'),
    'regzoo-openvino': Variant(_on_engine('openvino'), engine='openvino'),
    'regzoo-auto': Variant(_on_engine('auto'), engine='auto'),
    'regzoo-int8-ort': Variant(_on_engine('onnxruntime', True), 'int8', _int8_default, engine='onnxruntime'),
    'regzoo-int8-openvino': Variant(_on_engine('openvino', True), 'int8', _int8_default, engine='openvino'),
    'regzoo-int8-auto': Variant(_on_engine('auto', True), 'int8', _int8_default, engine='auto'),
}
REFERENCE = 'timm'
TRAIN_VARIANTS = ('timm', 'regzoo')
BENCH_ENGINES = ('onnxruntime', 'openvino', 'auto')  # the engines --engines names; 'torch' is regzoo-opt's row
# (engine, int8) -> its row: regzoo-opt / regzoo-int8 run on 'torch'
ENGINE_VARIANTS = {(v.engine, v.dtype == 'int8'): k for k, v in VARIANTS.items() if v.engine != 'torch'}


def default_variants(machine: Machine, bf16: bool = False) -> list[str]:
    """The torch variants that run without --variants: each one's ``default_on``, plus every bf16 one if ``bf16``
    (the engine rows are ``with_engines``')."""
    return [k for k, v in VARIANTS.items()
            if v.engine == 'torch' and (v.default_on(machine) or (bf16 and v.dtype == 'bfloat16'))]


def with_engines(variants: list[str], engines: list[str]) -> list[str]:
    """``variants`` plus, for each of ``engines``, its fp32 row, and its int8 row where 'regzoo-int8' runs."""
    int8 = 'regzoo-int8' in variants
    added = [ENGINE_VARIANTS[(e, q)] for e in engines for q in (False, True) if not q or int8]
    return variants + [k for k in added if k not in variants]


def runnable_variants(variants: list[str], report: Callable[[str], object] = lambda line: None) -> list[str]:
    """``variants`` less those whose engine's extra is missing, each skipped with a line to ``report``."""
    kept = []
    for k in variants:
        v = VARIANTS[k]
        try:
            if v.engine not in ('torch', 'auto'):
                require_engine(v.engine, int8=v.dtype == 'int8')
            if v.dtype == 'int8':
                from regzoo.deploy.quantize import require_torchao
                require_torchao()
        except MissingExtraError as e:
            report(f'skipping {k}: {e}')
            continue
        kept.append(k)
    return kept


def engine_of(model: nn.Module, variant: str) -> str:
    """The engine a row ran on: the variant's, or the one 'auto' picked."""
    choice = getattr(model, 'engine_choice', None)
    return choice.engine if choice is not None else VARIANTS[variant].engine


def achieved_gflops(macs_per_image: int, img_per_s: float) -> float:
    """GFLOP/s a model reaches: 2 FLOPs per multiply-add, the convention the matmul peak is counted in."""
    return 2 * macs_per_image * img_per_s / 1e9


def pct_of_peak(gflops: float, peak_gflops: float | None) -> float | None:
    return None if not peak_gflops else 100 * gflops / peak_gflops


def fit_probe_head(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
    """Set ``model.head.fc`` to a ridge-regression probe of the labels on the pooled features.

    Random-init RegNets give every input the same top-1 class, which would make a top-1 agreement
    trivially 1.0; after the probe the predictions follow the image classes, so the agreement means something.
    """
    with torch.no_grad():
        feats = torch.cat([model.forward_head(model.forward_features(x), pre_logits=True)
                           for x in images.split(batch_size)]).double()
        mu = feats.mean(0)
        f = feats - mu
        k = int(labels.max()) + 1
        target = torch.nn.functional.one_hot(labels, k).double()
        ridge = 1e-3 * f.pow(2).sum(0).mean() * torch.eye(f.shape[1], dtype=torch.float64)
        w = torch.linalg.solve(f.T @ f + ridge, f.T @ (target - target.mean(0))).T
        fc = model.head.fc
        fc.weight.zero_()
        fc.bias.fill_(-10.0)  # the classes the probe does not use never win
        fc.weight[:k] = w.float()
        fc.bias[:k] = (target.mean(0) - w @ mu).float()


def probe_summary(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> str:
    """fp32 accuracy of the probe head on held-out generated images, and how many classes it predicts."""
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x in images.split(batch_size)])
    return f'probe top-1 {(pred == labels).float().mean().item():.3f}, {pred.unique().numel()} classes predicted'


def infer_step(model: nn.Module, x: torch.Tensor, autocast: bool) -> Callable[[], object]:
    def step():
        with torch.no_grad(), torch.autocast('cpu', torch.bfloat16) if autocast else contextlib.nullcontext():
            return model(x)
    return step


def train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    target = torch.randint(0, model.num_classes, (x.shape[0],))

    def step():
        loss = nn.functional.cross_entropy(model(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def build_variants(name: str, variants: list[str], settings: BenchSettings) -> tuple[dict[str, nn.Module], Shared]:
    import timm
    s = settings
    lossy = any(VARIANTS[k].dtype != 'float32' for k in variants)
    ours = randomize_bn(create_model(name)).eval()
    calibration, labels = synthetic_batch(s.agreement_images, s.img_size, seed=1)
    if lossy:
        fit_probe_head(ours, calibration, labels, s.batch_size)
    theirs = timm.create_model(name, pretrained=False)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    eager_format = torch.channels_last if s.channels_last else torch.contiguous_format
    for m in (ours, theirs):
        m.train(s.train).to(memory_format=eager_format)
    shared = Shared(ours, theirs, torch.randn(s.batch_size, 3, s.img_size, s.img_size), calibration,
                    'channels_last' if s.channels_last else s.memory_format, s.compile)
    return {k: VARIANTS[k].build(shared) for k in variants}, shared


def _input(x: torch.Tensor, variant: Variant, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and variant.eager else x


def _round(v: float | None, digits: int = 1) -> float | str:
    return '' if v is None else round(v, digits)


def bench_model(name: str, variants: list[str], settings: BenchSettings, fp32_peak: float | None,
                report: Callable[[str], object] = lambda line: None) -> list[dict]:
    """One row (``ROW_COLUMNS``) per variant of ``name``; ``report`` gets side notes (the probe's accuracy)."""
    s = settings
    models, shared = build_variants(name, variants, s)
    x = shared.example_input

    def steps_for(batch: torch.Tensor) -> dict[str, Callable[[], object]]:
        if s.train:
            return {k: train_step(m, _input(batch, VARIANTS[k], s.channels_last)) for k, m in models.items()}
        return {k: infer_step(m, _input(batch, VARIANTS[k], s.channels_last), VARIANTS[k].autocast_bf16)
                for k, m in models.items()}

    steps = steps_for(x)
    # rows on other engines own thread pools that spin after a call: settle before each timed one (SETTLE)
    settle = SETTLE if any(VARIANTS[k].engine != 'torch' for k in models) else 0.0
    times = timed_interleaved(steps, s.repeats, s.warmup, min_seconds=s.min_seconds, settle=settle)
    latency = {}
    if not s.train and s.latency_repeats:
        latency = {k: statistics.median(v) * 1e3 for k, v in timed_interleaved(
            steps_for(x[:1].clone()), s.latency_repeats, s.warmup, settle=settle).items()}
    agree = {}
    lossy = [k for k in models if VARIANTS[k].dtype != 'float32']
    if lossy and not s.train:
        images, labels = synthetic_batch(s.agreement_images, s.img_size, seed=2)  # held out from the fit
        report(f'{name} fp32 on {len(images)} held-out generated images: '
               f'{probe_summary(shared.regzoo_model, images, labels, s.batch_size)}')
        agree = {k: round(top1_agreement(models[k], shared.regzoo_model, images, s.batch_size), 4) for k in lossy}
    for k, m in models.items():
        if VARIANTS[k].engine == 'auto':
            report(f"{name}: {k}: engine='auto' picks {engine_of(m, k)}: {m.engine_choice.reason}")
    macs = complexity(name, s.img_size)['flops']
    # vs the fastest row: through each row's paired ratio to timm, so the two ratio columns tell one story
    # (the fastest row reads 1.0, every other row less)
    vs_timm = {k: paired_ratio(times[REFERENCE], times[k]) for k in models}
    rows = []
    for k, m in models.items():
        med = statistics.median(times[k])
        fmt = getattr(m, 'memory_format', torch.channels_last if s.channels_last and VARIANTS[k].eager
                      else torch.contiguous_format)
        img_per_s = s.batch_size / med
        gflops = None if s.train else achieved_gflops(macs, img_per_s)  # fwd+bwd FLOPs are not counted
        rows.append(dict(
            model=name, mode='train' if s.train else 'infer', variant=k, dtype=VARIANTS[k].dtype,
            memory_format='channels_last' if fmt == torch.channels_last else 'contiguous',
            batch_size=s.batch_size, img_size=s.img_size, img_per_s=round(img_per_s, 2),
            median_ms=round(med * 1e3, 1), spread_pct=round(spread_pct(times[k]), 1),
            engine=engine_of(m, k), ratio_vs_timm=round(vs_timm[k], 3),
            ratio_vs_fastest=round(vs_timm[k] / max(vs_timm.values()), 3),
            gflops=_round(gflops), pct_fp32_peak=_round(None if gflops is None else pct_of_peak(gflops, fp32_peak)),
            latency_bs1_ms=_round(latency.get(k), 2),
            # the profiler sees torch's allocations only, not those of another engine's runtime
            peak_mem_mb=_round(peak_memory_mb(steps[k]) if s.memory and engine_of(m, k) == 'torch' else None),
            top1_agree_vs_fp32=agree.get(k, ''), rounds=len(times[k])))
    return rows
