"""Ports for programs that must be told theirs in advance (TorchServe, Prometheus, torchrun, the demo).

Where a program can take port 0 and report what it bound, let it: ``lumenserve serve`` does
(``tests/support/server.py`` reads the ready line), so its tests pick no ports. A port picked
here is free when picked but released before the other program binds it, and any process may
take it in between. So the one pattern for ports chosen in advance is
``retry_on_port_clash(start, count)``: ``start`` gets fresh ports and raises ``PortClash``
(``raise_if_port_clash`` on its output) when the program found one taken; it is tried again
with new ports. ``unused_port`` is the other need: a port that nothing answers on, held bound
(not listening) by this process for the block so that nothing else can take it.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
# Linux's EADDRINUSE text (Python, Go, Java), and the demo's own set-up check.
_IN_USE = re.compile(r"address already in use|EADDRINUSE|port \d+ on \S+ is in use", re.IGNORECASE)


class PortClash(RuntimeError):
    """The program could not bind a port picked for it: another process took it first."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free right now (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def raise_if_port_clash(output: str) -> None:
    """Raise ``PortClash`` when a program's output says one of its ports was taken."""
    match = _IN_USE.search(output)
    if match:
        raise PortClash(match.group(0))


def retry_on_port_clash(start: Callable[[list[int]], T], count: int, attempts: int = 3) -> T:
    """``start(ports)`` with ``count`` fresh ports, again with new ones while it raises ``PortClash``."""
    for attempt in range(attempts):
        try:
            return start(free_ports(count))
        except PortClash:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def unused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the whole block (bound here, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
