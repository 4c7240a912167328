"""The machine a timing is taken on: what its CPU is, what it can do at most, and how its allocator behaves.

* ``describe_machine()``: CPU model, the ISA flags that decide which kernels oneDNN runs (AVX2, AVX-512,
  AVX512-BF16, AMX, VNNI), torch threads, torch and oneDNN versions, whether oneDNN has native bf16.
* ``measure_peaks(machine)``: the roofline ceilings, i.e. the best GFLOP/s of a large square matmul in
  fp32, and in bf16 / int8 only where the CPU runs them natively (elsewhere they would measure a slow
  fallback and say nothing about the hardware).
* FLOP convention: **1 multiply-add = 2 FLOPs**, both for the peak (an n×n by n×n matmul is 2n³ FLOPs)
  and for a model's achieved GFLOP/s (2 × ``regzoo.complexity(...)['flops']``, which counts multiply-adds).
* ``retain_freed_memory()``: make glibc keep freed memory instead of unmapping it, so that large
  activations are not page-faulted in (and zeroed by the kernel) again on every forward pass.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from regzoo.utils.timing import timed

# the flags (as /proc/cpuinfo spells them) that decide which fp32 / bf16 / int8 kernels oneDNN can pick
ISA_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx_vnni', 'amx_tile', 'amx_bf16', 'amx_int8')
VNNI_FLAGS = ('avx512_vnni', 'avx_vnni', 'amx_int8')  # int8 dot-product instructions
# what torch.backends.cpu.get_cpu_capability() implies where /proc/cpuinfo is not there to read
_CAPABILITY_FLAGS = {'AVX2': ('avx2', 'fma'), 'AVX512': ('avx2', 'fma', 'avx512f')}
PEAK_SIZE = 2048  # 2 * 2048^3 = 17 GFLOP per matmul: long enough to time, short enough for a 2-core VM
PEAK_REPEATS = 10  # best of: other load only ever slows a timing down


@dataclass(frozen=True)
class Machine:
    cpu: str
    isa: tuple[str, ...]  # the ISA_FLAGS this CPU has, in ISA_FLAGS order
    isa_source: str  # '/proc/cpuinfo', or 'torch capability' where the flags were inferred
    capability: str  # torch.backends.cpu.get_cpu_capability(): the vector ISA torch's own kernels use
    threads: int
    torch_version: str
    onednn_version: str
    bf16_native: bool  # bf16_native('cpu')

    @property
    def vnni(self) -> bool:
        return any(f in self.isa for f in VNNI_FLAGS)


@dataclass(frozen=True)
class Peak:
    """Best matmul throughput in one dtype; ``gflops`` None with ``note`` saying why it was not measured."""
    dtype: str
    gflops: float | None
    note: str


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> tuple[tuple[str, ...], str]:
    """(the ISA_FLAGS present, where they were read): /proc/cpuinfo on Linux x86, else torch's capability."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('flags'):
                present = set(line.split(':', 1)[1].split())
                return tuple(f for f in ISA_FLAGS if f in present), '/proc/cpuinfo'
    except OSError:
        pass
    return _CAPABILITY_FLAGS.get(torch.backends.cpu.get_cpu_capability(), ()), 'torch capability'


def onednn_version() -> str:
    """oneDNN's version from torch's build config ('3.12.0'), or why there is none."""
    if not torch.backends.mkldnn.is_available():
        return 'not available'
    found = re.search(r'(?:MKL-DNN|oneDNN)\s+v(\S+)', torch.__config__.show())
    return found.group(1) if found else 'unknown'


def bf16_native(device: torch.device | str = 'cpu') -> bool:
    """Whether ``device`` runs bfloat16 on native kernels: CUDA's own check; on CPU, oneDNN's (AVX512-BF16 / AMX /
    AVX-NE-CONVERT), without which bf16 runs on slow fallback kernels."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    return device.type == 'cpu' and torch.backends.mkldnn.is_available() and \
        torch.ops.mkldnn._is_mkldnn_bf16_supported()


def describe_machine() -> Machine:
    isa, source = cpu_flags()
    return Machine(cpu=cpu_name(), isa=isa, isa_source=source, capability=torch.backends.cpu.get_cpu_capability(),
                   threads=torch.get_num_threads(), torch_version=torch.__version__, onednn_version=onednn_version(),
                   bf16_native=bf16_native('cpu'))


def matmul_gflops(dtype: torch.dtype, size: int = PEAK_SIZE, repeats: int = PEAK_REPEATS) -> float:
    """Best-of-``repeats`` GFLOP/s (2 FLOPs per multiply-add) of a ``size``² matmul at torch's thread count.

    Best, not median: a peak is what the machine can do, and other load only ever slows a run down.
    int8 runs ``torch._int_mm`` (int8 x int8 -> int32), the others ``torch.mm``.
    """
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.int8:
        a, b = (torch.randint(-64, 64, (size, size), dtype=torch.int8, generator=gen) for _ in range(2))
        times = timed(lambda: torch._int_mm(a, b), repeats, warmup=1)
    else:
        a, b = (torch.randn(size, size, generator=gen).to(dtype) for _ in range(2))
        times = timed(lambda: torch.mm(a, b), repeats, warmup=1)
    return 2 * size ** 3 / min(times) / 1e9


def measure_peaks(machine: Machine, size: int = PEAK_SIZE, repeats: int = PEAK_REPEATS) -> tuple[Peak, ...]:
    """fp32 always; bf16 where oneDNN has native bf16; int8 where the CPU has VNNI and ``torch._int_mm`` runs."""
    how = f'{size}x{size} matmul, best of {repeats}, {machine.threads} threads'
    peaks = [Peak('float32', matmul_gflops(torch.float32, size, repeats), f'torch.mm {how}')]
    if machine.bf16_native:
        peaks.append(Peak('bfloat16', matmul_gflops(torch.bfloat16, size, repeats), f'torch.mm {how}'))
    else:
        peaks.append(Peak('bfloat16', None, 'not measured: no native bf16 in oneDNN (needs AVX512-BF16 / AMX / '
                                            'AVX-NE-CONVERT); it would time a slow fallback'))
    if not machine.vnni:
        peaks.append(Peak('int8', None, f'not measured: no VNNI ({" / ".join(VNNI_FLAGS)})'))
    else:
        try:
            peaks.append(Peak('int8', matmul_gflops(torch.int8, size, repeats), f'torch._int_mm {how}'))
        except (RuntimeError, NotImplementedError) as err:  # builds without a CPU _int_mm kernel
            peaks.append(Peak('int8', None, f'not measured: torch._int_mm does not run here ({err})'.splitlines()[0]))
    return tuple(peaks)


def machine_lines(machine: Machine, peaks: tuple[Peak, ...] = (), allocator: str | None = None) -> list[str]:
    """The machine and its peaks as ``key: value`` lines (the benchmark's header)."""
    missing = [f for f in ISA_FLAGS if f not in machine.isa]
    isa = ' '.join(machine.isa) or 'none of ' + ', '.join(ISA_FLAGS)
    if missing and machine.isa:
        isa += f' (no {", ".join(missing)})'
    lines = [f'cpu: {machine.cpu}',
             f'isa: {isa} [from {machine.isa_source}]',
             f'torch cpu capability: {machine.capability}; '
             f'oneDNN native bf16: {"yes" if machine.bf16_native else "no"}',
             f'threads: {machine.threads}',
             f'torch: {machine.torch_version}; oneDNN: {machine.onednn_version}']
    if allocator is not None:
        lines.append(f'allocator: {allocator}')
    for p in peaks:
        value = f'{p.gflops:.1f} GFLOP/s ({p.note})' if p.gflops is not None else p.note
        lines.append(f'peak {p.dtype}: {value}')
    if peaks:
        lines.append('FLOPs: 1 multiply-add = 2 FLOPs (peaks and achieved GFLOP/s alike)')
    return lines


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_RETAIN_BYTES = 1 << 30  # blocks below this stay in the heap when freed


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, 'gnu_get_libc_version') and hasattr(libc, 'mallopt') else None


def retain_freed_memory() -> bool:
    """Keep freed blocks in the process's heap (glibc); True if applied, False where there is no glibc.

    Why: glibc serves each allocation over its mmap threshold (at most 32 MiB; an activation map of a batch)
    with fresh pages from ``mmap`` and unmaps them on free, so every forward pass faults its activations in
    again and the kernel zeroes each page: on a 2-core AMD EPYC VM that was 45 % of timm eager regnetx_002's
    batch-32 time. With the mmap and trim thresholds raised, freed memory is reused. Process-wide. The
    cost: the heap keeps its high-water mark, which fragmentation can raise (timm eager regnetx_002, batch
    32: 283 MB of resident memory instead of 135 MB); ``release_freed_memory()`` gives the free part back.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _RETAIN_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, _RETAIN_BYTES))


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS now (glibc ``malloc_trim(0)``; a no-op elsewhere)."""
    libc = _glibc()
    if libc is not None and hasattr(libc, 'malloc_trim'):
        libc.malloc_trim(0)
