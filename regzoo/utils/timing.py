"""Timing: one stopwatch, and repeated / interleaved timings of calls built on it.

Every figure regzoo reports (validate.py's images/s, ``python -m regzoo``, the benchmark, the
memory-format choice of ``optimize_for_inference``) is measured here, so they share one clock and
one rule for asynchronous devices: ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock
read, so queued GPU work is counted where it ran, not where it was launched.
"""
from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping

import torch

Sync = Callable[[], object] | None
MAX_ROUNDS = 200  # timed_interleaved's cap on the rounds min_seconds adds
SETTLE = 0.1  # timed_interleaved's settle between candidates that own thread pools (engines)


class Stopwatch:
    """``with Stopwatch(sync) as watch: work()``, then ``watch.seconds`` is the wall time of ``work``."""

    def __init__(self, sync: Sync = None):
        self.sync = sync
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        if self.sync is not None:
            self.sync()  # earlier queued work is not this block's
        self._start = time.perf_counter()
        return self

    def elapsed(self) -> float:
        """Seconds since the block started, read inside it (no sync: for progress and ETA lines)."""
        return time.perf_counter() - self._start

    def __exit__(self, *exc) -> None:
        if self.sync is not None:
            self.sync()
        self.seconds = time.perf_counter() - self._start


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1, sync: Sync = None) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        with Stopwatch(sync) as watch:
            fn()
        out.append(watch.seconds)
    return out


def timed_interleaved(
        fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1, sync: Sync = None, *,
        min_seconds: float = 0.0, max_rounds: int = MAX_ROUNDS, settle: float = 0.0,
) -> dict[str, list[float]]:
    """Seconds of each call of several ``fns``, one call of each per round, after ``warmup`` calls of each.

    Rounds run until there are ``repeats`` of them and ``min_seconds`` have passed (at most ``max_rounds``
    for the time rule). The order rotates every round, so no candidate always runs right after the same
    other one. Interleaving makes load from other processes, thermal throttling and frequency changes hit
    every candidate alike, so their medians (and ``paired_ratio``) compare even on a busy machine.

    ``settle``: before each timed call, untimed calls of the same fn until that many seconds have passed. For
    candidates with thread pools of their own (torch's OpenMP, ONNX Runtime's, OpenVINO's TBB): their workers
    spin after a call, and on 2 cores regnetx_002 at batch 1 measured 15-25 ms a call in ONNX Runtime right
    after another engine against 5-7 ms in a run of its own; 0.1 s of settling brought it back (``SETTLE``).
    """
    for fn in fns.values():
        timed(fn, 0, warmup, sync)
    keys = list(fns)
    times: dict[str, list[float]] = {k: [] for k in keys}
    start, r = time.perf_counter(), 0
    while r < repeats or (r < max_rounds and time.perf_counter() - start < min_seconds):
        shift = r % len(keys) if keys else 0
        for k in keys[shift:] + keys[:shift]:
            if settle:
                _settle(fns[k], settle, sync)
            times[k] += timed(fns[k], 1, 0, sync)
        r += 1
    return times


def _settle(fn: Callable[[], object], seconds: float, sync: Sync) -> None:
    """Untimed calls of ``fn`` (at least one) until ``seconds`` have passed."""
    with Stopwatch(sync) as watch:
        fn()
        while watch.elapsed() < seconds:
            fn()


def paired_ratio(reference: list[float], times: list[float]) -> float:
    """Speed over the reference: the median over rounds of reference time / time in the same round."""
    return statistics.median(r / t for r, t in zip(reference, times, strict=True))


def spread_pct(times: list[float]) -> float:
    """Interquartile range over median, in %: how much the rounds disagree (0 for fewer than 2 rounds)."""
    if len(times) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4, method='inclusive')
    return 100 * (q3 - q1) / statistics.median(times)


def device_synchronizer(device: torch.device | str) -> Callable[[], None]:
    """What waits for ``device``'s queued work: CUDA kernels run asynchronously, so a clock read right
    after a forward call would time only the launches. CPU (and meta) work is done when the call returns."""
    device = torch.device(device)
    if device.type == 'cuda':
        return functools.partial(torch.cuda.synchronize, device) if device.index is not None \
            else torch.cuda.synchronize
    return lambda: None
