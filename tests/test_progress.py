"""regzoo.utils.runtime.Progress, the one "bar on a terminal, log lines otherwise" helper (predict, validate's
eval loop and train.py's epochs use it), and the run clock of its lines."""
from __future__ import annotations

import io
import logging

from regzoo.utils.runtime import Progress, clock_text


def test_log_lines_every_n_items_and_at_the_last_when_not_on_a_terminal():
    lines = []
    with Progress(7, 'epoch 0', unit='update', enabled=False, every=3, log=lines.append) as progress:
        for _ in range(7):
            progress.update(1, loss='0.5')
    assert [line.split(',')[0] for line in lines] == ['epoch 0: 3/7 update (43%)', 'epoch 0: 6/7 update (86%)',
                                                      'epoch 0: 7/7 update (100%)']
    assert all(line.endswith('loss 0.5') for line in lines)


def test_a_caller_line_a_resumed_start_and_a_bar_that_also_logs(monkeypatch):
    lines = []
    progress = Progress(5, 'epoch 1', enabled=False, every=2, initial=3, log=lines.append)
    for _ in range(2):
        progress.update(1, line=lambda: f'update {progress.count}/5')
    assert lines == ['update 4/5', 'update 5/5']
    stderr = io.StringIO()
    monkeypatch.setattr('sys.stderr', stderr)
    lines.clear()
    with Progress(2, 'x', enabled=True, every=1, log=lines.append, log_with_bar=True) as progress:
        progress.update(2)
    assert '2/2' in stderr.getvalue() and len(lines) == 1 and lines[0].startswith('x: 2/2 it (100%)')
    with Progress(2, 'y', enabled=True, every=1, log=lines.append) as progress:
        progress.update(2)
    assert len(lines) == 1  # a bar alone: no log lines


def test_time_paced_lines_go_to_the_logger(caplog):
    with caplog.at_level(logging.INFO, logger='regzoo.progress'):
        with Progress(4, 'predict', unit='img', enabled=False, interval=0.0) as progress:
            progress.update(4)
    assert [r.getMessage().split(',')[0] for r in caplog.records] == ['predict: 4/4 img (100%)'] * 2
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='regzoo.progress'):
        with Progress(4, 'v', enabled=False, interval=float('inf')) as progress:
            progress.update(4)
    assert not caplog.records


def test_clock_text_rounds_to_the_second():
    assert (clock_text(0.4), clock_text(59.6), clock_text(3725)) == ('0:00:00', '0:01:00', '1:02:05')
