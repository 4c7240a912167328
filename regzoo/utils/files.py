"""Files: the one atomic writer every save goes through (checkpoints, exported models, caches)."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it over ``path``.

    The rename is atomic within a folder, so a reader (or a resume after a crash) sees the old file
    or the new one, never a truncated one. The temp name carries the pid so that concurrent writers
    (DDP ranks, parallel tests) do not write into each other's temp file; it is removed on failure.
    Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
