"""Files: the one atomic writer every save goes through (checkpoints, exported models, caches)."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly process-wide)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it over ``path``.

    The rename is atomic within a folder, so a reader (or a resume after a crash) sees the old file
    or the new one, never a truncated one. The temp name carries the pid so that concurrent writers
    (DDP ranks, parallel tests) do not write into each other's temp file; it is removed on failure.
    The file gets the mode a plain ``open(path, 'w')`` gives (0666 less the umask), whatever ``write``
    used: safetensors, for one, creates its files 0600, which left run folders mixing 0600 and 0644.
    Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written in ``folder`` (created if missing), or None: checked before a long job
    rather than found at its end. Its nearest existing ancestor must be a writable folder."""
    path = Path(folder).absolute()
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                return f'{parent} is a file, not a folder'
            if not os.access(parent, os.W_OK | os.X_OK):
                return f'{parent} is not writable'
            return None
    return None
