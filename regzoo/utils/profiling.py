"""Peak memory of one call: the live-tensor high-water mark, from torch.profiler's allocation records."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable


@contextlib.contextmanager
def _native_stderr_silenced():
    """fd 2 to /dev/null: the profiler's C++ side prints start/stop lines there that no flag turns off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(step: Callable[[], object]) -> float | None:
    """Peak MiB of live tensors during one call of ``step``, from torch.profiler's allocation records.

    Counted from the allocations themselves, not the resident size: the same under any allocator setting
    (a retained heap hides allocations in resident pages or inflates them by fragmentation). Under glibc's
    default allocator it equals the resident-size high-water mark one call adds, within 0.2 MB (timm, regzoo
    and regzoo-opt on regnetx_002 and regnety_032, batch 32). None where the profiler gives no records.

    Why the profiler's private ``kineto_results``: the public ``prof.events()`` / ``key_averages()`` fold every
    allocation made inside an op into that op's *net* ``cpu_memory_usage`` (torch/autograd/profiler.py,
    ``_parse_kineto_results``), so an op's temporaries, freed before it returns, never show, and nested ops
    count twice; a peak needs the raw, timestamped allocation and free records, which only the kineto results
    expose. Should they move, this reports no figure rather than a wrong one.
    """
    from torch.profiler import ProfilerActivity, profile
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():
        prof.start()
    try:
        step()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    try:
        records = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]']
    except AttributeError:
        return None
    live = peak = 0
    for e in sorted(records, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2 ** 20 if records else None
