"""Inference engines behind one door: regzoo's torch fast path, ONNX Runtime and OpenVINO, chosen by measurement.

    fast = regzoo.optimize_for_inference(model, engine='auto', example_input=torch.randn(32, 3, 224, 224))
    fast.engine, fast.engine_choice.reason    # 'onnxruntime', 'fastest at 32x3x224x224: onnxruntime 61.2 ms, ...'

Which engine is fastest depends on the CPU (ISA, cores), the model and the batch size, so ``engine='auto'`` builds
every installed engine, checks each one's logits against eager PyTorch (fp32: max |d| / max |logit| <= 1e-3), times
them in interleaved rounds on the batch shape the model will serve and keeps the fastest (``choose_engine``, a pure
function of the timings). int8 goes through the same door (``use_int8_engine``): the ``regzoo.quantize`` graph runs
in oneDNN ('torch') or, exported as ONNX QDQ, in ONNX Runtime or OpenVINO; 'auto' keeps the fastest whose top-1
agrees with fp32 on the calibration images at least ``MIN_INT8_AGREEMENT`` of the time.

Engines other than 'torch' are optional extras: asked for by name, a missing one is a one-line error naming
``pip install 'regzoo[...]'``; 'auto' skips it with a log line. The choice lives in memory, unless ``cache_path``
names a JSON file to keep it in (the memory-format cache of ``optimize_for_inference``, keys prefixed 'engine|').
ONNX files are written to a temporary folder, removed once the sessions are built.
"""
from __future__ import annotations

import copy
import functools
import logging
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from regzoo.deploy import inference
from regzoo.deploy import quantize as quantization
from regzoo.deploy.engines_choice import (
    ENGINES,
    MIN_INT8_AGREEMENT,
    EngineChoice,
    EngineError,
    cached_choice,
    check_engine_name,
    choose_engine,
    engine_key,
    median_ms,
    require_engine,
    requested,
    store_choice,
)
from regzoo.deploy.export import write_int8_onnx, write_onnx
from regzoo.deploy.inference import CALIBRATION_IMAGES, DtypeChoice
from regzoo.utils.extras import MissingExtraError

PARITY_RTOL = 1e-3  # fp32: max |engine - eager| / max |eager| at build time
FLOAT_DTYPES = (None, 'float32', torch.float32)
_LOGGER = logging.getLogger(__name__)


class EngineModel(nn.Module):
    """An eval-only model run by ONNX Runtime or OpenVINO: float NCHW tensor in, float logits out (in the input's
    floating dtype). ``engine`` / ``engine_choice`` say which engine and why; ``dtype_choice`` is float32's."""

    def __init__(self, runner: Callable[[torch.Tensor], torch.Tensor], engine: str, source: nn.Module):
        super().__init__()
        self.runner = runner
        self.engine = engine
        self.engine_choice = requested(engine)
        self.dtype = torch.float32
        self.dtype_choice = DtypeChoice('float32', f'engine {engine!r} runs float32')
        for name in ('pretrained_cfg', 'default_cfg', 'num_classes', 'in_chans', 'cfg'):
            if hasattr(source, name):
                setattr(self, name, getattr(source, name))
        self.training = False

    def train(self, mode: bool = True) -> EngineModel:
        if mode:
            raise RuntimeError(f'an engine={self.engine!r} model is eval-only; train the original model instead')
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype if x.is_floating_point() else torch.float32
        with torch.no_grad():
            return self.runner(x.detach().to(torch.float32).contiguous()).to(out_dtype)

    def extra_repr(self) -> str:
        return f'engine={self.engine}'


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).abs().max() / expected.float().abs().max().clamp_min(1e-12)).item()


def check_parity(engine: str, model: Callable, x: torch.Tensor, expected: torch.Tensor) -> None:
    """Raise ``EngineError`` unless ``model(x)`` equals eager's ``expected`` logits within ``PARITY_RTOL``."""
    with torch.no_grad():
        got = model(x)
    if got.shape != expected.shape:
        raise EngineError(f'engine={engine!r} returned shape {tuple(got.shape)}, eager {tuple(expected.shape)}')
    err = relative_error(got, expected)
    if not err <= PARITY_RTOL:
        raise EngineError(f'engine={engine!r} disagrees with eager PyTorch: max |d| / max |logit| = {err:.2g} > '
                          f'{PARITY_RTOL:g} on a {"x".join(map(str, x.shape))} batch; use engine=\'torch\'')


def onnx_runner_for(engine: str, path: Path, shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The runner of the ONNX file ``path`` in ``engine``, tuned for batches of ``shape``."""
    from regzoo.deploy.engines_runtime import OnnxRuntimeRunner, OpenVinoRunner
    threads = torch.get_num_threads()
    return OnnxRuntimeRunner(path, threads) if engine == 'onnxruntime' else OpenVinoRunner(path, shape, threads)


def _available(names: tuple[str, ...], strict: bool, int8: bool, skipped: dict[str, str]) -> list[str]:
    """``names`` whose extras are installed; a missing one raises when ``strict`` (asked for by name), else it is
    logged and recorded in ``skipped``."""
    found = []
    for name in names:
        try:
            require_engine(name, int8)
        except MissingExtraError as e:
            if strict:
                raise
            _LOGGER.info("engine='auto': skipping %s: %s", name, e)
            skipped[name] = str(e)
            continue
        found.append(name)
    return found


# ------------------------------------------------------------------------------------------------ the doors

def optimize_for_inference(
        model: nn.Module, *, engine: str = 'torch', dtype=None, example_input: torch.Tensor | None = None,
        calibration_images=None, cache_path: str | Path | None = None, **torch_options,
) -> nn.Module:
    """``regzoo.optimize_for_inference``: an eval-only, faster copy of ``model`` run by ``engine``.

    Args:
        engine: 'torch' (``regzoo.deploy.inference.torch_fast_path``: BN folded, fused oneDNN convs; its
            ``torch_options``: fuse_bn, memory_format, compile), 'onnxruntime', 'openvino' (float32 and int8;
            extras ``[export]`` / ``[openvino]``), or 'auto': every installed engine built, checked against eager
            (fp32: 1e-3 relative), timed on ``example_input`` (else the first 32 ``calibration_images``) and the
            fastest kept. The result's ``engine`` and ``engine_choice`` (an ``EngineChoice``) say which and why.
        dtype: None / 'float32', 'bfloat16' or 'auto' (engine 'torch' only, see its docstring), or 'int8':
            ``regzoo.quantize`` calibrated on ``calibration_images`` (needed), run by ``engine``.
        example_input: the batch the model will serve: its size and resolution decide what is fastest.
        calibration_images: images like the ones the model will see (int8 calibration; dtype='auto' agreement).
        cache_path: a JSON file keeping 'auto''s choices (and the memory format's); None: nothing is written.
    """
    check_engine_name(engine)
    if engine == 'torch' and dtype != 'int8':
        out = inference.torch_fast_path(model, dtype=dtype, example_input=example_input,
                                               calibration_images=calibration_images, cache_path=cache_path,
                                               **torch_options)
        out.engine, out.engine_choice = 'torch', requested('torch')
        return out
    torch_build = functools.partial(inference.torch_fast_path, cache_path=cache_path, **torch_options)
    return optimize_with_engine(model, engine, torch_build, dtype=dtype, example_input=example_input,
                                calibration_images=calibration_images, cache_path=cache_path)


def quantize(model: nn.Module, calibration_images, backend: str = 'onednn', *, engine: str = 'torch',
             example_input: torch.Tensor | None = None, cache_path: str | Path | None = None,
             **options) -> nn.Module:
    """``regzoo.quantize``: ``regzoo.deploy.quantize.quantize_pt2e`` (its docstring has the arguments), run by
    ``engine``:
    'torch' (``backend``), 'onnxruntime' or 'openvino' (the graph as ONNX QDQ; extras ``[export]`` /
    ``[openvino]``), or 'auto': the fastest on ``example_input`` (default: the first calibration batch) of those
    whose top-1 agrees with fp32 on the calibration images at least ``MIN_INT8_AGREEMENT`` of the time.
    ``model.engine_choice`` says which and why; ``cache_path`` may keep 'auto''s choice in a JSON file."""
    check_engine_name(engine)
    if engine == 'torch':
        qmodel = quantization.quantize_pt2e(model, calibration_images, backend, **options)
        qmodel.engine_choice = requested('torch')
        return qmodel
    if engine != 'auto':
        require_engine(engine, int8=True)  # before calibrating: a missing extra should not cost a calibration first
    kept: list[torch.Tensor] = []
    qmodel = quantization.quantize_pt2e(model, calibration_images, backend, keep_batches=kept, **options)
    reference = copy.deepcopy(model).eval() if model.training else model
    example = example_input if example_input is not None else kept[0]
    return use_int8_engine(qmodel, engine, reference, kept, example, cache_path)


# ------------------------------------------------------------------------------------------------ fp32 engines

def optimize_with_engine(
        model: nn.Module, engine: str, torch_build: Callable[..., nn.Module], *, dtype=None,
        example_input: torch.Tensor | None = None, calibration_images: torch.Tensor | None = None,
        cache_path: str | Path | None = None,
) -> nn.Module:
    """``optimize_for_inference`` for ``engine`` != 'torch' or dtype 'int8'.

    ``torch_build(model, dtype=, example_input=, calibration_images=)`` builds the 'torch' engine's model.
    """
    check_engine_name(engine)
    if model.training:
        warnings.warn('optimize_for_inference: the model is in training mode; the optimized copy is eval-only '
                      '(BN uses its running stats, dropout and drop-path are off). The original is unchanged.',
                      stacklevel=3)
        model = copy.deepcopy(model).eval()
    if dtype == 'int8':
        return _int8(model, engine, example_input, calibration_images, cache_path)
    in_chans = getattr(model, 'in_chans', 3)
    # the batch the engines are timed on: the one given, else (at most 32 of) the calibration images
    x = example_input if example_input is not None else calibration_images[:CALIBRATION_IMAGES] \
        if calibration_images is not None else torch.randn(8, in_chans, 224, 224)
    cpu = all(p.device.type == 'cpu' for p in model.parameters())
    reasons = {} if cpu else {e: 'runs on CPU only' for e in ENGINES[1:]}
    if dtype not in FLOAT_DTYPES and dtype != 'auto':
        reasons = {e: f'runs float32 and int8, not dtype={dtype!r}' for e in ENGINES[1:]}
    if engine != 'auto' and engine in reasons:
        raise EngineError(f'engine={engine!r} {reasons[engine]}: use engine=\'torch\'')
    key = engine_key(model, str(dtype), tuple(x.shape)) if engine == 'auto' else None
    known = cached_choice(cache_path, key)
    names = ENGINES if engine == 'auto' else (engine,)
    if known is not None:
        names = (known.engine,)
    skipped: dict[str, str] = {k: v for k, v in reasons.items() if k in names}
    names = _available(tuple(n for n in names if n not in skipped), engine != 'auto', False, skipped)
    with torch.no_grad():
        expected = model(x)
    built = {}
    with tempfile.TemporaryDirectory(prefix='regzoo-engine-') as tmp:
        for name in names:
            if name == 'torch':
                built[name] = torch_build(model, dtype=dtype, example_input=x, calibration_images=calibration_images)
                if built[name].dtype != torch.float32:  # bf16: no fp32 tolerance to check against
                    continue
            else:
                path = Path(tmp) / 'model.onnx'
                if not path.exists():
                    write_onnx(model, path, x[:2] if len(x) > 1 else torch.cat([x, x]))
                built[name] = EngineModel(onnx_runner_for(name, path, tuple(x.shape)), name, model)
            try:
                check_parity(name, built[name], x, expected)
            except EngineError as e:
                if engine != 'auto':
                    raise
                warnings.warn(f"engine='auto' leaves {name} out: {e}", stacklevel=3)
                skipped[name] = str(e)
                del built[name]
    if known is not None and known.engine in built:
        choice = known
    elif engine == 'auto':
        choice = choose_engine(median_ms(built, x), skipped, shape=tuple(x.shape))
        store_choice(cache_path, key, choice)
        _LOGGER.info("optimize_for_inference: engine='auto' chose %s: %s", choice.engine, choice.reason)
    else:
        choice = requested(engine)
    out = built[choice.engine]
    out.engine, out.engine_choice = choice.engine, choice
    return out


# ------------------------------------------------------------------------------------------------ int8 engines

def _int8(model: nn.Module, engine: str, example_input: torch.Tensor | None, calibration_images,
          cache_path: str | Path | None) -> nn.Module:
    if calibration_images is None:
        raise EngineError("dtype='int8' needs calibration_images: a few hundred images like the ones the model "
                          'will see (a folder, an (N, C, H, W) tensor or a loader)')
    return quantize(model, calibration_images, engine=engine, example_input=example_input, cache_path=cache_path)


def use_int8_engine(qmodel: nn.Module, engine: str, float_model: nn.Module, images: list[torch.Tensor],
                    example: torch.Tensor, cache_path: str | Path | None = None) -> nn.Module:
    """``qmodel`` (a ``QuantizedModel`` running oneDNN) set to run on ``engine``: its graph written as ONNX QDQ for
    ONNX Runtime / OpenVINO; 'auto' times every installed engine on ``example`` and keeps the fastest whose top-1
    agrees with ``float_model``'s on ``images`` at least ``MIN_INT8_AGREEMENT`` of the time."""
    check_engine_name(engine)
    key = engine_key(float_model, f'int8-{qmodel.activation_bits}bit', tuple(example.shape)) \
        if engine == 'auto' else None
    known = cached_choice(cache_path, key)
    names = (known.engine,) if known is not None else ENGINES if engine == 'auto' else (engine,)
    skipped: dict[str, str] = {}
    names = _available(names, engine != 'auto', True, skipped)
    runners: dict[str, Callable] = {}
    with tempfile.TemporaryDirectory(prefix='regzoo-engine-') as tmp:
        for name in names:
            if name == 'torch':
                runners[name] = qmodel  # its forward runs its oneDNN / inductor graph as configured
                continue
            path = Path(tmp) / 'int8.onnx'
            if not path.exists():
                write_int8_onnx(qmodel, path)
            runners[name] = onnx_runner_for(name, path, tuple(example.shape))
    agreement = int8_agreement(runners, float_model, images)
    if known is not None and known.engine in runners:
        choice = known
    elif engine == 'auto':
        choice = choose_engine(median_ms(runners, example.float().contiguous()), skipped, agreement,
                               shape=tuple(example.shape))
        store_choice(cache_path, key, choice)
        _LOGGER.info("int8: engine='auto' chose %s: %s", choice.engine, choice.reason)
    else:
        choice = EngineChoice(engine, f'requested (engine={engine!r}); top-1 agreement with fp32 '
                                      f'{agreement[engine]:.3f}', agreement=agreement)
        if agreement[engine] < MIN_INT8_AGREEMENT:
            warnings.warn(f'int8 on {engine}: top-1 agreement with fp32 is {agreement[engine]:.3f} on the calibration '
                          f'images (< {MIN_INT8_AGREEMENT}); see benchmarks/int8_agreement.py', stacklevel=3)
    if choice.engine != 'torch':
        del qmodel.runner  # a submodule (the oneDNN graph) until now
        qmodel.runner = runners[choice.engine]
    qmodel.engine, qmodel.engine_choice = choice.engine, choice
    return qmodel


def int8_agreement(runners: Mapping[str, Callable], float_model: nn.Module,
                   images: list[torch.Tensor]) -> dict[str, float]:
    """Top-1 agreement of each int8 runner with ``float_model`` on the batches ``images``."""
    same = dict.fromkeys(runners, 0)
    count = 0
    with torch.no_grad():
        for x in images:
            x = x.float().contiguous()
            reference = float_model(x).argmax(1)
            for name, runner in runners.items():
                same[name] += int((runner(x).argmax(1) == reference).sum())
            count += len(x)
    return {name: n / max(1, count) for name, n in same.items()}


# ------------------------------------------------------------------------------------------------ written files

def check_onnx_file(path: str | Path, engine: str, references: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
                    inputs) -> dict[str, tuple[float, float]]:
    """Run the ONNX file ``path`` in ``engine`` ('onnxruntime' or 'openvino', set up as ``optimize_for_inference``
    sets it up) on the batches ``inputs``; per reference: (max |engine - reference| over the logits, top-1
    agreement with it). ``python -m regzoo.export --engine`` reports these."""
    if engine not in ENGINES[1:]:
        raise EngineError(f'engine={engine!r} does not run ONNX files: use onnxruntime or openvino')
    require_engine(engine)
    runner = None
    worst, same, count = dict.fromkeys(references, 0.0), dict.fromkeys(references, 0), 0
    with torch.no_grad():
        for x in inputs:
            x = x.float().contiguous()
            runner = runner or onnx_runner_for(engine, Path(path), tuple(x.shape))
            got = runner(x)
            for name, reference in references.items():
                expected = reference(x)
                worst[name] = max(worst[name], (got - expected).abs().max().item())
                same[name] += int((got.argmax(1) == expected.argmax(1)).sum())
            count += len(x)
    if count == 0:
        raise ValueError('no images to check the ONNX file on')
    return {name: (worst[name], same[name] / count) for name in references}
