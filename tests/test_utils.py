"""The utils layer: the one atomic writer and the one timer."""
from __future__ import annotations

import time

import pytest

from regzoo.utils.files import atomic_write
from regzoo.utils.timing import Stopwatch, timed, timed_interleaved


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / 'state.json'
    assert atomic_write(path, lambda tmp: tmp.write_text('one')) == path
    atomic_write(str(path), lambda tmp: tmp.write_text('two'))
    assert path.read_text() == 'two'
    assert [p.name for p in tmp_path.iterdir()] == ['state.json']


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / 'weights.bin'
    path.write_bytes(b'old')

    def half_written(tmp):
        tmp.write_bytes(b'ne')
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        atomic_write(path, half_written)
    assert path.read_bytes() == b'old'  # readers never see the partial file
    assert [p.name for p in tmp_path.iterdir()] == ['weights.bin']  # and the temp is gone


def test_stopwatch_syncs_around_the_block_and_measures_it():
    log = []
    with Stopwatch(lambda: log.append('sync')) as watch:
        log.append('work')
        time.sleep(0.02)
    assert log == ['sync', 'work', 'sync']  # queued device work before the block is not its time, after it is
    assert 0.02 <= watch.seconds < 1.0


def test_timed_runs_warmup_untimed_then_repeats():
    calls = []
    times = timed(lambda: calls.append(len(calls)), repeats=3, warmup=2)
    assert calls == [0, 1, 2, 3, 4] and len(times) == 3 and all(t >= 0 for t in times)
    slow = timed(lambda: time.sleep(0.01), repeats=2, warmup=0)
    assert len(slow) == 2 and min(slow) >= 0.01


def test_timed_interleaved_rotates_its_rounds_after_warmup():
    order, syncs = [], []
    times = timed_interleaved({'a': lambda: order.append('a'), 'b': lambda: order.append('b')}, repeats=3,
                              warmup=1, sync=lambda: syncs.append(1))
    # one warm-up call of each, then one timed call of each per round, the order rotating every round (no
    # candidate always runs right after the same other one): load hits both alike
    assert order == ['a', 'b'] + ['a', 'b'] + ['b', 'a'] + ['a', 'b']
    assert {k: len(v) for k, v in times.items()} == {'a': 3, 'b': 3}
    assert len(syncs) == 2 * 6  # before and after each of the six timed calls


def test_timed_interleaved_settles_each_candidate_before_its_timed_call():
    # settle: untimed calls of the same candidate run right before each timed one, for at least `settle` seconds
    # (another engine's spinning thread pool must not be billed to this one); the timed call is the next one
    events = []

    def call(k):
        events.append((k, time.perf_counter()))
        time.sleep(0.004)
    times = timed_interleaved({k: (lambda k=k: call(k)) for k in 'abc'}, repeats=2, warmup=0, settle=0.02)
    assert {k: len(v) for k, v in times.items()} == {'a': 2, 'b': 2, 'c': 2}
    runs = []  # consecutive calls of one candidate: each turn is settling calls then the timed one
    for k, t in events:
        if runs and runs[-1][0] == k:
            runs[-1][1].append(t)
        else:
            runs.append((k, [t]))
    assert [k for k, _ in runs] == ['a', 'b', 'c', 'b', 'c', 'a']
    for _, stamps in runs:
        assert len(stamps) >= 3 and stamps[-1] - stamps[0] >= 0.02  # >= 0.02 s of settling, then the timed call
    assert all(t >= 0.004 for v in times.values() for t in v)
