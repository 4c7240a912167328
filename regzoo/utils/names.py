"""Names: natural sort order, the one "did you mean" helper every error message uses, and its short lists."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically ('regnety_2560' after 'regnety_320')."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', name)]


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Candidates close to ``name``: prefix matches first ('regnety_03' -> 'regnety_032'), then similar spellings."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    prefixed = [c for c in sorted(candidates, key=natural_key) if c.startswith(name) and c not in matches]
    return (prefixed + matches)[:n]


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """'; did you mean 'a', 'b'?' for the close matches of ``name``, or '' when there are none."""
    hint = close_matches(name, candidates, n=n)
    return f'; did you mean {", ".join(map(repr, hint))}?' if hint else ''


def few(items: Iterable, n: int = 8) -> str:
    """The first ``n`` items, comma-separated, and how many more: an error message's list of names."""
    items = [str(item) for item in items]
    return ', '.join(items[:n]) + (f', ... and {len(items) - n} more' if len(items) > n else '')
