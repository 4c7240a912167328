"""What 'auto' chooses between and how: the engines and their extras, the rule (``choose_engine``, a pure function
of measured timings), the timing, and the optional JSON file a choice is kept in. ``engines.py`` builds the engines.
"""
from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from regzoo.deploy.inference import tuning_key
from regzoo.utils.extras import require
from regzoo.utils.files import atomic_write
from regzoo.utils.timing import SETTLE, timed_interleaved

ENGINES = ('torch', 'onnxruntime', 'openvino')  # also the tie-break order of choose_engine
ENGINE_CHOICES = (*ENGINES, 'auto')  # what engine= (and the command lines' --engine) accepts
# engine -> (modules it needs, the pip extra that installs them): both other engines run an exported ONNX file
ENGINE_NEEDS = {'torch': ((), ''), 'onnxruntime': (('onnx', 'onnxruntime'), 'export'),
                'openvino': (('openvino', 'onnx'), 'openvino')}
INT8_EXPORT_NEEDS = 'onnxscript'  # the QDQ file comes from the torch.export-based ONNX exporter
MIN_INT8_AGREEMENT = 0.99  # int8 'auto': top-1 agreement with fp32 on the calibration images
AUTO_REPEATS = 7  # interleaved timing rounds per candidate


class EngineError(ValueError):
    """An engine cannot run this model as asked (bad name, device or dtype, failed parity)."""


def require_engine(engine: str, int8: bool = False) -> None:
    """Import what ``engine`` needs, or raise ``MissingExtraError``: "engine='openvino' needs openvino; install it
    with: pip install 'regzoo[openvino]'"."""
    modules, extra = ENGINE_NEEDS[engine]
    for module in (*modules, INT8_EXPORT_NEEDS) if int8 and engine != 'torch' else modules:
        require(module, extra, f'engine={engine!r}' + (' with dtype int8' if int8 else ''))


def check_engine_name(engine: str) -> None:
    if engine not in ENGINE_CHOICES:
        raise EngineError(f'engine={engine!r} is invalid: must be one of {list(ENGINE_CHOICES)}')


@dataclass(frozen=True)
class EngineChoice:
    """The engine a model runs on and why (``model.engine_choice``)."""
    engine: str
    reason: str
    ms: dict[str, float] = field(default_factory=dict)  # median ms per batch of ``shape``, per measured engine
    agreement: dict[str, float] = field(default_factory=dict)  # int8: top-1 agreement with fp32, per engine
    skipped: dict[str, str] = field(default_factory=dict)  # engine -> why it was not a candidate
    shape: tuple[int, ...] = ()  # the batch the engines were timed on


def requested(engine: str) -> EngineChoice:
    return EngineChoice(engine, f'requested (engine={engine!r})')


def choose_engine(ms: Mapping[str, float], skipped: Mapping[str, str] | None = None,
                  agreement: Mapping[str, float] | None = None, min_agreement: float = MIN_INT8_AGREEMENT,
                  shape: tuple[int, ...] = ()) -> EngineChoice:
    """'auto''s rule: the fastest measured engine (median ms per batch), among those whose top-1 agreement with fp32
    is at least ``min_agreement`` when ``agreement`` is given (int8); ties go to the earlier of ``ENGINES``."""
    skipped = dict(skipped or {})
    if agreement is not None:
        for name in ms:
            if agreement.get(name, 0.0) < min_agreement:
                skipped[name] = f'top-1 agreement with fp32 {agreement.get(name, 0.0):.3f} < {min_agreement}'
    eligible = {k: v for k, v in ms.items() if k not in skipped}
    if not eligible:
        why = '; '.join(f'{k}: {v}' for k, v in skipped.items()) or 'no engine was measured'
        raise EngineError(f"engine='auto' found no engine to run this model ({why})")
    best = min(eligible, key=lambda k: (eligible[k], ENGINES.index(k)))
    at = 'x'.join(map(str, shape)) or 'the example batch'
    times = ', '.join(f'{k} {v:.2f} ms' + ('' if k == best else f' ({v / eligible[best]:.2f}x)')
                      for k, v in sorted(eligible.items(), key=lambda kv: kv[1]))
    reason = f'fastest at {at}: {times}' + ''.join(f'; {k} not a candidate: {v}' for k, v in skipped.items())
    return EngineChoice(best, reason, dict(ms), dict(agreement or {}), skipped, tuple(shape))


def median_ms(candidates: Mapping[str, Callable], x: torch.Tensor, repeats: int = AUTO_REPEATS) -> dict[str, float]:
    """Median ms per call of each candidate on ``x``, in interleaved rounds (the order rotating every round).

    Each timed call follows 0.1 s of untimed calls of the same candidate (``timed_interleaved``'s ``settle``):
    every engine has its own thread pool (OpenMP for torch, ONNX Runtime's, OpenVINO's TBB), whose workers spin
    for a while after a call; on a few cores the call right after another engine's pays for that spinning,
    which is not the engine's own cost (measured: 3x at batch 1).
    """
    with torch.no_grad():
        times = timed_interleaved({k: functools.partial(f, x) for k, f in candidates.items()}, repeats, warmup=1,
                                  settle=SETTLE)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


# ------------------------------------------------------------------------------------------------ the cache

def engine_key(model: nn.Module, kind: str, shape: tuple[int, ...]) -> str | None:
    key = tuning_key(model, True, kind, shape)
    return key and f'engine|{key}'


def cached_choice(cache_path: str | Path | None, key: str | None) -> EngineChoice | None:
    path = Path(cache_path) if cache_path is not None else None
    if path is None or key is None or not path.is_file():
        return None
    entry = json.loads(path.read_text()).get(key)
    if entry is None:
        return None
    entry['reason'] = f'from {path}: {entry["reason"]}'
    entry['shape'] = tuple(entry['shape'])
    return EngineChoice(**entry)


def store_choice(cache_path: str | Path | None, key: str | None, choice: EngineChoice) -> None:
    if cache_path is None or key is None:
        return
    path = Path(cache_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = json.loads(path.read_text()) if path.is_file() else {}
    cache[key] = asdict(choice)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(cache, indent=1, sort_keys=True)))
