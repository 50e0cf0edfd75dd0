"""A server's resident memory and CPU time from /proc, summed over its process tree (MLServer
runs its model in worker processes; KServe and lumenserve in one)."""

from __future__ import annotations

import contextlib
import os

import psutil

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_s(pid: int) -> float:
    """utime + stime (fields 14 and 15 of /proc/<pid>/stat) of ``pid`` and its live descendants."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            stat = open(f"/proc/{p}/stat").read()  # noqa: SIM115 - one read
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS_PER_S


def tree_rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of ``pid`` and its live descendants."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += int(psutil.Process(p).memory_info().rss)
    return total


def listen_addresses(pid: int) -> list[str]:
    """``host:port`` of every TCP socket the process tree listens on."""
    found = set()
    for p in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for conn in psutil.Process(p).net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add(f"{conn.laddr.ip}:{conn.laddr.port}")
    return sorted(found)
