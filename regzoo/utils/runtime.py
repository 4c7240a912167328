"""How regzoo's command lines behave: one-line errors and exit codes, progress on a terminal or in a log, workers.

* An expected error (bad path, bad flag, unknown model, unreadable checkpoint, missing extra, weights that
  cannot be fetched) is one line on stderr, ``PROG: error: MESSAGE``, and exit code 2; anything else is a
  bug and keeps its traceback (exit 1). ``run_cli`` does this around a ``main``; ``ArgumentParser`` makes
  argparse's own errors one line too.
* ``Progress`` draws a tqdm bar when stderr is a terminal and otherwise logs a line now and then, so log
  files get readable lines instead of every ``\\r`` redraw of a bar.
* ``default_workers()``: data-loading processes = the CPUs this process may use, at most 8.
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
    """Data-loading worker processes when none are asked for: min(available CPUs, 8)."""
    return min(available_cpus(), MAX_DEFAULT_WORKERS)


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
    """Print ``PROG: error: MESSAGE`` as one line on stderr; return exit code 2."""
    print(f'{prog}: error: {one_line(err)}', file=sys.stderr, flush=True)
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


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
    """Progress of a loop over ``total`` items: a tqdm bar on a terminal, else a log line every ``interval`` s.

        with Progress(len(paths), 'predict', unit='img') as progress:
            for batch in batches:
                ...
                progress.update(len(batch))
                progress.write(text)     # a line on stdout that does not break the bar

    ``enabled``: None (default) draws the bar only when stderr is a terminal; False logs only; True forces the bar.
    """

    def __init__(self, total: int | None, desc: str = '', unit: str = 'it', *, enabled: bool | None = None,
                 interval: float = 30.0, logger: logging.Logger | None = None):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.logger = logger or logging.getLogger('regzoo.progress')
        self.count = 0
        self._start = self._last_log = time.monotonic()
        self._logged = False
        self.bar = None
        if enabled if enabled is not None else stderr_is_tty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1, **postfix) -> None:
        self.count += n
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval:
            self._last_log, self._logged = now, True
            self.logger.info('%s', self.status(postfix))

    def status(self, postfix: dict | None = None) -> str:
        """'DESC: 320/1000 img (32%), 25.1 img/s, elapsed 0:00:12, ETA 0:00:27' (plus ``postfix`` items)."""
        elapsed = time.monotonic() - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        done = f'{self.count}/{self.total}' if self.total else f'{self.count}'
        text = f'{self.desc}: {done} {self.unit}'
        if self.total:
            text += f' ({100 * self.count / self.total:.0f}%)'
        text += f', {rate:.1f} {self.unit}/s, elapsed {_clock(elapsed)}'
        if self.total and rate > 0 and self.count < self.total:
            text += f', ETA {_clock((self.total - self.count) / rate)}'
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
        elif self._logged:  # a log that had progress lines gets the last one too
            self._logged = False
            self.logger.info('%s', self.status())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
