"""The benchmark: machine header and peaks, the numbers it derives (pure functions), its CSV, a tiny real run."""
import csv
import re
import subprocess
import sys

import pytest
import torch
from helpers import randomize_bn

import regzoo
from regzoo.analysis.complexity import complexity
from regzoo.cli.benchmark import COLUMNS, TABLE_COLUMNS, csv_path, header_lines, table_lines
from regzoo.cli.benchmark import main as benchmark_main
from regzoo.data.synthetic import synthetic_batch
from regzoo.deploy.benchmarking import (
    BENCH_ENGINES,
    REFERENCE,
    VARIANTS,
    achieved_gflops,
    default_variants,
    fit_probe_head,
    pct_of_peak,
    runnable_variants,
    with_engines,
)
from regzoo.deploy.engines_choice import ENGINES
from regzoo.utils.machine import ISA_FLAGS, Machine, Peak, describe_machine, matmul_gflops, measure_peaks
from regzoo.utils.profiling import peak_memory_mb
from regzoo.utils.timing import paired_ratio, spread_pct, timed_interleaved

TINY = ['--model', 'regnetx_002', '--batch-size', '2', '--img-size', '32', '--repeats', '2', '--min-seconds', '0',
        '--warmup', '1', '--latency-repeats', '1', '--peak-size', '128', '--memory-format', 'channels_last',
        '--allocator', 'default']


def _machine(**kwargs) -> Machine:
    fields = dict(cpu='Test CPU 9000', isa=('avx2', 'fma', 'avx512f'), isa_source='/proc/cpuinfo',
                  capability='AVX512', threads=4, torch_version='2.99.0', onednn_version='3.99.1', bf16_native=False)
    return Machine(**{**fields, **kwargs})


def test_header_lists_the_machine_and_its_peaks():
    peaks = (Peak('float32', 123.45, 'torch.mm 2048x2048'), Peak('bfloat16', None, 'not measured: no native bf16'),
             Peak('int8', None, 'not measured: no VNNI'))
    lines = header_lines(_machine(), peaks, 'retain freed memory (glibc)')
    text = '\n'.join(lines)
    for expected in ('cpu: Test CPU 9000', 'threads: 4', 'torch: 2.99.0', 'oneDNN: 3.99.1', 'capability: AVX512',
                     'oneDNN native bf16: no', 'allocator: retain freed memory (glibc)',
                     'peak float32: 123.5 GFLOP/s (torch.mm 2048x2048)', 'peak bfloat16: not measured: no native bf16',
                     'peak int8: not measured: no VNNI', '1 multiply-add = 2 FLOPs'):
        assert expected in text, expected
    isa = next(line for line in lines if line.startswith('isa:'))
    assert isa.startswith('isa: avx2 fma avx512f (no avx512_vnni,') and 'amx_bf16' in isa
    assert header_lines(_machine(), peaks, 'retain freed memory (glibc)', markdown=True) == [f'- {x}' for x in lines]


def test_machine_description_agrees_with_torch():
    machine = describe_machine()
    assert machine.threads == torch.get_num_threads() and machine.torch_version == torch.__version__
    assert machine.onednn_version in torch.__config__.show() or not torch.backends.mkldnn.is_available()
    assert machine.bf16_native == (torch.backends.mkldnn.is_available()
                                   and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert set(machine.isa) <= set(ISA_FLAGS) and machine.cpu
    # torch's kernels run the vector ISA the CPU has: the two sources must not contradict each other
    if machine.capability in ('AVX2', 'AVX512'):
        assert 'avx2' in machine.isa
    if machine.capability == 'AVX512':
        assert 'avx512f' in machine.isa
    assert machine.vnni == any(f in machine.isa for f in ('avx512_vnni', 'avx_vnni', 'amx_int8'))


def test_peaks_are_measured_only_where_native():
    machine = describe_machine()
    fp32, bf16, int8 = measure_peaks(machine, size=128, repeats=2)
    assert (fp32.dtype, bf16.dtype, int8.dtype) == ('float32', 'bfloat16', 'int8')
    assert fp32.gflops > 0 and '128x128' in fp32.note
    assert (bf16.gflops is not None) == machine.bf16_native
    assert bf16.gflops is not None or bf16.note.startswith('not measured: no native bf16')
    if not machine.vnni:
        assert int8.gflops is None and int8.note.startswith('not measured: no VNNI')
    # pretend-native: a machine that says it has them gets them timed (here on whatever kernels exist)
    forced = measure_peaks(_machine(bf16_native=True, isa=('avx2', 'avx512_vnni'), threads=machine.threads), 64, 1)
    assert forced[1].gflops > 0
    assert forced[2].gflops is not None or 'torch._int_mm does not run here' in forced[2].note


def test_matmul_gflops_counts_two_flops_per_multiply_add():
    # a 256^3 fp32 matmul is 2 * 256^3 FLOPs: the rate times the best time gives that back
    gflops = matmul_gflops(torch.float32, 256, repeats=3)
    assert 0 < gflops < 1e5


def test_derived_numbers():
    assert achieved_gflops(200_000_000, 50.0) == pytest.approx(20.0)  # 2 FLOPs per MAC
    assert pct_of_peak(40.0, 160.0) == pytest.approx(25.0)
    assert pct_of_peak(40.0, None) is None
    # paired per-round ratio: round 3 is slow for both (load), which a ratio of medians would not cancel
    assert paired_ratio([2.0, 2.0, 8.0], [1.0, 1.0, 4.0]) == pytest.approx(2.0)
    assert paired_ratio([2.0, 2.0, 2.0], [1.0, 2.0, 4.0]) == pytest.approx(1.0)
    assert spread_pct([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(100 * (4.0 - 2.0) / 3.0)
    assert spread_pct([7.0]) == 0.0
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])  # rounds of one run only


def test_timed_interleaved_rotates_the_order_and_honours_repeats_and_min_seconds():
    calls = []
    steps = {k: (lambda k=k: calls.append(k)) for k in 'abc'}
    times = timed_interleaved(steps, 3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {'a': 3, 'b': 3, 'c': 3}
    assert calls == list('abc') + list('abc') + list('bca') + list('cab')  # warm-up, then rotated rounds
    times = timed_interleaved({'a': lambda: None}, 1, warmup=0, min_seconds=0.05)
    assert len(times['a']) > 1  # kept going until the minimum time


def test_variant_table_defaults():
    assert REFERENCE in VARIANTS and all(callable(v.build) for v in VARIANTS.values())
    plain = default_variants(_machine())
    assert plain == ['timm', 'regzoo', 'regzoo-opt']
    bf16 = {k for k, v in VARIANTS.items() if v.dtype == 'bfloat16'}
    assert set(default_variants(_machine(bf16_native=True))) == set(plain) | bf16
    assert set(default_variants(_machine(), bf16=True)) == set(plain) | bf16
    # int8 runs by default where the CPU has VNNI (and torchao is installed, as the test extra installs it)
    assert default_variants(_machine(isa=('avx2', 'fma', 'avx_vnni'))) == plain + ['regzoo-int8']


def test_peak_memory_counts_the_live_tensors_of_one_call():
    def step():
        a = torch.ones(10 * 2 ** 20)  # 40 MB
        b = torch.ones(5 * 2 ** 20)  # 20 MB, while a is alive: 60 MB at the peak
        del a, b
        c = torch.ones(12 * 2 ** 20)  # 48 MB alone afterwards
        return c.sum()
    assert peak_memory_mb(step) == pytest.approx(60, abs=1)


def test_csv_path_starts_a_new_file_when_the_columns_changed(tmp_path):
    assert csv_path(tmp_path, 'h', '2026-01-01').name == 'benchmark-h-2026-01-01.csv'
    (tmp_path / 'benchmark-h-2026-01-01.csv').write_text('date,host,cpu,old,columns\n1,2,3,4,5\n')
    assert csv_path(tmp_path, 'h', '2026-01-01').name == 'benchmark-h-2026-01-01-1.csv'
    (tmp_path / 'benchmark-h-2026-01-01-1.csv').write_text(','.join(COLUMNS) + '\n')
    assert csv_path(tmp_path, 'h', '2026-01-01').name == 'benchmark-h-2026-01-01-1.csv'  # same columns: append


def test_tiny_real_run_writes_consistent_rows(tmp_path, capsys):
    # the fp32 variants named: which run by default depends on the CPU (test_variant_table_defaults covers that)
    rows = benchmark_main([*TINY, '--variants', 'timm,regzoo,regzoo-opt', '--out-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert [r['variant'] for r in rows] == ['timm', 'regzoo', 'regzoo-opt']
    assert out.startswith('cpu: ') and 'peak float32: ' in out and 'allocator: default' in out
    peak = float(re.search(r'peak float32: ([\d.]+) GFLOP/s', out).group(1))
    macs = complexity('regnetx_002', 32)['flops']
    for r in rows:
        assert r['rounds'] == 2 and r['spread_pct'] >= 0 and r['latency_bs1_ms'] > 0
        gflops = achieved_gflops(macs, r['img_per_s'])
        assert r['gflops'] == pytest.approx(gflops, abs=0.06)
        # the header prints the peak to 0.1 GFLOP/s: the % lies between what the two ends of that rounding give
        assert 100 * gflops / (peak + 0.05) - 0.06 <= r['pct_fp32_peak'] <= 100 * gflops / (peak - 0.05) + 0.06
        assert r['img_per_s'] == pytest.approx(2 / (r['median_ms'] / 1e3), rel=0.01)
    assert rows[0]['ratio_vs_timm'] == 1.0
    (path,) = tmp_path.glob('benchmark-*.csv')
    with path.open() as f:
        reader = csv.DictReader(f)
        written = list(reader)
    assert tuple(reader.fieldnames) == COLUMNS and len(written) == 3
    assert float(written[0]['fp32_peak_gflops']) == pytest.approx(peak, abs=0.06)
    assert written[2]['variant'] == 'regzoo-opt' and written[2]['memory_format'] == 'channels_last'


def test_markdown_output_and_chosen_variants(tmp_path, capsys):
    rows = benchmark_main([*TINY, '--variants', 'timm,regzoo', '--markdown', '--latency-repeats', '0',
                           '--no-memory', '--out-dir', str(tmp_path)])
    assert [r['variant'] for r in rows] == ['timm', 'regzoo']
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('- cpu: ')
    table = [line for line in lines if line.startswith('|')]
    assert table[0] == '| ' + ' | '.join(TABLE_COLUMNS) + ' |' and table[1].startswith('|---|')
    assert len(table) == 4 and table[2].startswith('| regnetx_002 | timm | torch | float32 |')
    assert table_lines(rows, markdown=True, head=False) == table[2:]


def test_engine_rows_are_added_per_engine_and_skipped_without_their_extra(monkeypatch):
    assert with_engines(['timm', 'regzoo-opt'], ['onnxruntime', 'auto']) == [
        'timm', 'regzoo-opt', 'regzoo-ort', 'regzoo-auto']
    # the int8 twins where regzoo-int8 runs; a row named already is not added twice
    assert with_engines(['timm', 'regzoo-int8', 'regzoo-ort'], list(BENCH_ENGINES)) == [
        'timm', 'regzoo-int8', 'regzoo-ort', 'regzoo-int8-ort', 'regzoo-openvino', 'regzoo-int8-openvino',
        'regzoo-auto', 'regzoo-int8-auto']
    assert {VARIANTS[k].engine for k in with_engines([], list(BENCH_ENGINES))} == set(BENCH_ENGINES)
    monkeypatch.setitem(sys.modules, 'openvino', None)  # as if not installed
    lines = []
    assert runnable_variants(['timm', 'regzoo-openvino', 'regzoo-auto'], lines.append) == ['timm', 'regzoo-auto']
    assert lines == ["skipping regzoo-openvino: engine='openvino' needs openvino; install it with: "
                     "pip install 'regzoo[openvino]'"]


def test_tiny_run_with_engine_rows(tmp_path, capsys):
    pytest.importorskip('onnxruntime')
    pytest.importorskip('openvino')
    rows = benchmark_main([*TINY, '--variants', 'timm,regzoo-opt', '--engines', 'onnxruntime,openvino,auto',
                           '--latency-repeats', '0', '--no-memory', '--out-dir', str(tmp_path)])
    out = capsys.readouterr()
    by_variant = {r['variant']: r for r in rows}
    assert list(by_variant) == ['timm', 'regzoo-opt', 'regzoo-ort', 'regzoo-openvino', 'regzoo-auto']
    assert [r['engine'] for r in rows[:4]] == ['torch', 'torch', 'onnxruntime', 'openvino']
    auto = by_variant['regzoo-auto']['engine']
    assert auto in ENGINES and re.search(rf"regnetx_002: regzoo-auto: engine='auto' picks {auto}: fastest at "
                                         r'2x3x32x32: ', out.err)
    # vs the fastest row: each row's ratio to timm over the largest one (the fastest row reads 1.0)
    best = max(r['ratio_vs_timm'] for r in rows)
    for r in rows:
        assert r['ratio_vs_fastest'] == pytest.approx(r['ratio_vs_timm'] / best, abs=2e-3)
    assert max(r['ratio_vs_fastest'] for r in rows) == 1.0
    assert 'ratio_vs_fastest' in out.out.splitlines()[next(i for i, x in enumerate(out.out.splitlines())
                                                           if x.startswith('model '))]


@pytest.mark.parametrize('argv, match', [
    (['--engines', 'tensorrt'], "unknown engine 'tensorrt' in --engines: choose from onnxruntime, openvino, auto"),
    (['--variants', 'timm,regzoo-int4'], "unknown variant 'regzoo-int4'"),
    (['--variants', 'regzoo,regzoo-opt'], "must include 'timm'"),
])
def test_bad_variants_are_one_line_errors(argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        benchmark_main(['--model', 'regnetx_002', *argv])
    assert info.value.code == 2 and match in capsys.readouterr().err


def test_bf16_variants_report_agreement(tmp_path):
    rows = benchmark_main([*TINY, '--variants', 'timm,regzoo-opt-bf16', '--latency-repeats', '0', '--no-memory',
                           '--repeats', '1', '--agreement-images', '8', '--out-dir', str(tmp_path)])
    bf16 = next(r for r in rows if r['variant'] == 'regzoo-opt-bf16')
    assert bf16['dtype'] == 'bfloat16' and 0.0 <= bf16['top1_agree_vs_fp32'] <= 1.0
    assert next(r for r in rows if r['variant'] == 'timm')['top1_agree_vs_fp32'] == ''


def test_train_mode_and_bad_names(tmp_path):
    rows = benchmark_main([*TINY, '--train', '--repeats', '1', '--warmup', '0', '--out-dir', str(tmp_path)])
    assert {r['variant'] for r in rows} == {'timm', 'regzoo'} and all(r['mode'] == 'train' for r in rows)
    assert all(r['gflops'] == '' for r in rows)  # fwd+bwd FLOPs are not counted
    with pytest.raises(ValueError, match='regnety_032'):
        benchmark_main(['--model', 'regnety_03', '--out-dir', str(tmp_path)])


def test_probe_head_makes_predictions_follow_the_generated_classes():
    torch.manual_seed(0)
    model = randomize_bn(regzoo.create_model('regnetx_002')).eval()
    train, train_labels = synthetic_batch(64, 32, seed=1)
    test, test_labels = synthetic_batch(64, 32, seed=2)
    with torch.no_grad():
        before = model(test).argmax(1)
        fit_probe_head(model, train, train_labels, batch_size=32)
        pred = model(test).argmax(1)
    # why the probe is needed: a random net sends the images of 10 classes to fewer classes than that,
    # none of them theirs, so a bf16-vs-fp32 top-1 agreement on it would say little
    assert before.unique().numel() < 10 and (before == test_labels).float().mean() < 0.2
    assert pred.unique().numel() >= 8 and (pred == test_labels).float().mean() > 0.8


def _repeated_allocation_faults(retain: bool) -> tuple[int, int]:
    """In a new process: the fewest minor page faults over rounds 5-8 of writing two fresh 40 MB tensors and
    freeing them, and the resident MB that ``release_freed_memory()`` then gives back.

    The fewest: glibc's aligned allocations reuse a freed block only once neighbours have coalesced, which
    takes a round or two depending on the heap's state.
    """
    code = ('import resource, sys, torch\n'
            'from regzoo.utils.machine import release_freed_memory, retain_freed_memory\n'
            f'if {retain} and not retain_freed_memory():\n'
            '    sys.exit(3)\n'
            'def rss_mb():\n'
            '    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2 ** 20\n'
            'faults = []\n'
            'for _ in range(8):\n'
            '    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n'
            '    a, b = torch.ones(10 * 2 ** 20), torch.ones(10 * 2 ** 20)\n'
            '    del a, b\n'
            '    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n'
            'held = rss_mb()\n'
            'release_freed_memory()\n'
            'print(min(faults[4:]), round(held - rss_mb()))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if out.returncode == 3:
        pytest.skip('no glibc here: retain_freed_memory() does nothing')
    assert out.returncode == 0, out.stderr
    faults, released = out.stdout.split()
    return int(faults), int(released)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='page faults and resident size: Linux')
def test_retained_memory_is_reused_without_page_faults_and_can_be_released():
    # glibc's default: blocks over its 32 MB mmap threshold are unmapped on free and faulted in again
    # (2 x 10240 4-KiB pages every round), so nothing stays resident to release
    faults, released = _repeated_allocation_faults(retain=False)
    assert faults > 15000 and released < 20
    # retained: the heap's freed blocks are reused, stay resident, and malloc_trim gives them back
    faults, released = _repeated_allocation_faults(retain=True)
    assert faults < 2000 and released >= 75
