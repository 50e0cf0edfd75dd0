"""The server's malloc arena limit (``malloc_arenas``): applied before threads allocate, one
arena serves every thread, the environment's ``MALLOC_ARENA_MAX`` wins, 0 leaves glibc alone.

Each case runs in a fresh interpreter: glibc fixes its arena limit when a second thread first
allocates, which this test process did long ago."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys, threading
from lumenserve.env import limit_malloc_arenas
applied = limit_malloc_arenas(int(sys.argv[1]))
blocks = []
def allocate():
    blocks.append([bytearray(1 << 20) for _ in range(4)])  # malloc from this thread
threads = [threading.Thread(target=allocate) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL("libc.so.6")
libc.open_memstream.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
buf, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, stream)
libc.fclose(stream)
print(applied, ctypes.string_at(buf, size.value).decode().count("<heap nr="))
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc arenas")


def heaps_after_threads(arenas: int, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(arenas)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=clean | env,
    )
    applied, heaps = out.stdout.split()
    return applied == "True", int(heaps)


def test_one_arena_serves_every_thread() -> None:
    assert heaps_after_threads(1) == (True, 1)


def test_zero_leaves_glibc_its_per_thread_arenas() -> None:
    applied, heaps = heaps_after_threads(0)
    assert not applied and heaps > 1


def test_the_environment_wins() -> None:
    applied, heaps = heaps_after_threads(1, MALLOC_ARENA_MAX="3")
    assert not applied and heaps > 1
