"""How regzoo's command lines behave: one-line errors and exit codes, progress on a terminal or in a log, workers.

* An expected error (bad path, bad flag, unknown model, unreadable checkpoint, missing extra, weights that
  cannot be fetched) is one line on stderr, ``PROG: error: MESSAGE``, and exit code 2; anything else is a
  bug and keeps its traceback (exit 1). ``run_cli`` does this around a ``main``; ``ArgumentParser`` makes
  argparse's own errors one line too.
* ``Progress`` draws a tqdm bar when stderr is a terminal and otherwise logs a line now and then (every N
  items, or every few seconds), so log files get readable lines instead of every ``\\r`` redraw of a bar. It is
  the one such helper: predict, validate's eval loop and train.py's epochs all use it.
* ``default_workers()``: data-loading processes = the CPUs this process may use, shared among the processes
  torchrun started on this machine, at most 8.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from regzoo.utils.extras import MissingExtraError

# ValueError: bad values, unknown names, unreadable checkpoints (CheckpointError); OSError: missing or unreadable
# files, weights that cannot be fetched (WeightsUnavailableError); MissingExtraError: an optional install
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MissingExtraError)
MAX_DEFAULT_WORKERS = 8


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """Data-loading worker processes when none are asked for: min(available CPUs, 8), the CPUs shared among
    the processes torchrun starts on this machine (``LOCAL_WORLD_SIZE``; 1 outside torchrun), at least 1."""
    per_process = available_cpus() // max(int(os.environ.get('LOCAL_WORLD_SIZE', 1)), 1)
    return max(min(per_process, MAX_DEFAULT_WORKERS), 1)


def one_line(err: BaseException | str) -> str:
    """A (possibly multi-line) error message as one line: the lines joined by '; ' (after a ':' by a space)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__ if isinstance(err, BaseException) else ''
    text = lines[0]
    for line in lines[1:]:
        text += (' ' if text.endswith(':') else '; ') + line
    return text


def error_exit(prog: str, err: BaseException | str) -> int:
    """Print ``PROG: error: MESSAGE`` as one line on stderr; return exit code 2.

    An error that has a command-line wording (``command_line_message()``: the zoo's missing pretrained weights,
    whose library text is a fix for Python callers) is printed in that wording: its fix is a flag.
    """
    command_line_message = getattr(err, 'command_line_message', None)
    text = command_line_message() if callable(command_line_message) else one_line(err)
    print(f'{prog}: error: {text}', file=sys.stderr, flush=True)
    return 2


def run_cli(main: Callable[[Sequence[str] | None], object], prog: str, argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; expected errors become one line + exit 2, Ctrl-C exit 130, others keep their traceback.

    ``main`` may return an exit code; anything else (None, a result object) counts as success (0).
    """
    try:
        result = main(argv)
    except EXPECTED_ERRORS as err:
        return error_exit(prog, err)
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return 130
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)`` and exit code 2, no usage dump."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n')


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (False for a file, a pipe, a replaced or closed stream)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def stderr_is_tty() -> bool:
    return is_terminal(sys.stderr)


def clock_text(seconds: float) -> str:
    """A duration as H:MM:SS, rounded to the second (run ETAs, progress lines)."""
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
    """Progress of a loop over ``total`` items: a tqdm bar on a terminal, else log lines.

        with Progress(len(paths), 'predict', unit='img') as progress:
            for batch in batches:
                ...
                progress.update(len(batch))
                progress.write(text)     # a line on stdout that does not break the bar

    ``enabled``: None (default) draws the bar only when stderr is a terminal; False logs only; True forces the bar.
    Log lines come every ``every`` items when given (and at the last one), else every ``interval`` seconds; they
    go to ``log`` (a callable taking the line) when given, else to ``logger``. ``log_with_bar``: log lines also
    while a bar is drawn (train.py: the bar is on the terminal, its stdout goes to a log file). ``initial``: the
    items already done (a resumed epoch).
    """

    def __init__(self, total: int | None, desc: str = '', unit: str = 'it', *, enabled: bool | None = None,
                 interval: float = 30.0, every: int | None = None, initial: int = 0,
                 log: Callable[[str], object] | None = None, logger: logging.Logger | None = None,
                 log_with_bar: bool = False, leave: bool = True):
        self.total, self.desc, self.unit, self.interval, self.every = total, desc, unit, interval, every
        logger = logger or logging.getLogger('regzoo.progress')
        self.log = log or (lambda line: logger.info('%s', line))
        self.count = self._initial = initial
        self._start = self._last_log = time.monotonic()
        self._logged = False
        self.bar = None
        if enabled if enabled is not None else stderr_is_tty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True,
                            file=sys.stderr, leave=leave)
        self.logs_lines = self.bar is None or log_with_bar

    def update(self, n: int = 1, line: Callable[[], str] | None = None, **postfix) -> None:
        """``n`` more items done; ``postfix`` items show on the bar and in the log line, ``line()`` (when given)
        is the log line to write instead of ``status``."""
        self.count += n
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
        if self.logs_lines and self._line_due():
            self._last_log, self._logged = time.monotonic(), True
            self.log(line() if line is not None else self.status(postfix))

    def _line_due(self) -> bool:
        if self.every:
            return self.count % self.every == 0 or self.count == self.total
        return time.monotonic() - self._last_log >= self.interval

    def status(self, postfix: dict | None = None) -> str:
        """'DESC: 320/1000 img (32%), 25.1 img/s, elapsed 0:00:12, ETA 0:00:27' (plus ``postfix`` items)."""
        elapsed = time.monotonic() - self._start
        rate = (self.count - self._initial) / elapsed if elapsed > 0 else 0.0
        done = f'{self.count}/{self.total}' if self.total else f'{self.count}'
        text = f'{self.desc}: {done} {self.unit}'
        if self.total:
            text += f' ({100 * self.count / self.total:.0f}%)'
        text += f', {rate:.1f} {self.unit}/s, elapsed {clock_text(elapsed)}'
        if self.total and rate > 0 and self.count < self.total:
            text += f', ETA {clock_text((self.total - self.count) / rate)}'
        if postfix:
            text += ', ' + ', '.join(f'{k} {v}' for k, v in postfix.items())
        return text

    def write(self, text: str, file=None) -> None:
        """Print ``text`` (to stdout by default) without garbling the bar."""
        file = file or sys.stdout
        if self.bar is not None:
            self.bar.write(text, file=file)
        else:
            print(text, file=file)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self._logged and not self.every:  # a time-paced log that had progress lines gets the last one too
            self._logged = False
            self.log(self.status())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
