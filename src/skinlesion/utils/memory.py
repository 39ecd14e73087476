"""Giving freed memory back to the operating system after a large decode.

glibc keeps freed heap memory in its arenas for reuse; after a 49 MP image was decoded
and reduced, hundreds of MB stay in the process (RSS) although nothing uses them —
"2.8 GB kept afterwards" for four such uploads. ``malloc_trim(0)`` returns the free
pages; it takes about a millisecond. Elsewhere (macOS, musl, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim``); False where unavailable."""
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        trim(0)  # type: ignore[operator]
    except OSError:  # pragma: no cover - defensive
        return False
    return True
