"""One process at a time on one piece of work: a lock file (``filelock``, which torch itself
installs) held for as long as the work runs. The OS frees it if the process dies; it is removed
when the work ends. A second process asking for the same lock stops at once with one line that
says what to do, rather than both writing the same files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from .errors import RactdError


@contextlib.contextmanager
def exclusive(path: Path, busy: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the block; if another process holds it, raise
    :class:`RactdError` with ``busy`` (what is going on and what to do), naming the lock file."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RactdError(busy.format(lock=f"{path.name} in {path.parent} is locked")) from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # removed while still held; Windows keeps an open file
            path.unlink()
        lock.release()
