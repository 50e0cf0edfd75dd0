"""The test helpers' own contracts: a port clash is recognised and retried, polling gives up."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.support.ports import PortClash, free_ports, raise_if_port_clash, retry_on_port_clash, unused_port
from tests.support.waiting import wait_until


def test_a_real_eaddrinuse_is_a_port_clash_and_is_retried_on_new_ports() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        tried: list[int] = []

        def start(ports: list[int]) -> int:
            port = taken if not tried else ports[0]  # the first try meets a port someone else took
            tried.append(port)
            program = f"import socket; socket.socket().bind(('127.0.0.1', {port}))"
            out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
            raise_if_port_clash(out.stderr)
            assert out.returncode == 0, out.stderr
            return port

        port = retry_on_port_clash(start, 1)
    assert tried[0] == taken and port == tried[1] != taken


def test_retry_gives_up_after_its_attempts() -> None:
    calls: list[list[int]] = []

    def always_taken(ports: list[int]) -> None:
        calls.append(ports)
        raise PortClash("address already in use")

    with pytest.raises(PortClash):
        retry_on_port_clash(always_taken, 2, attempts=3)
    assert len(calls) == 3 and all(len(set(ports)) == 2 for ports in calls)
    raise_if_port_clash("bound fine")  # other output is no clash


def test_free_ports_are_distinct_and_an_unused_port_refuses_connections() -> None:
    assert len(set(free_ports(5))) == 5
    with unused_port() as port, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_wait_until_returns_the_value_or_names_what_it_waited_for() -> None:
    answers = iter([None, 0, "ready"])
    assert wait_until(lambda: next(answers), 5, interval=0.001) == "ready"
    with pytest.raises(AssertionError, match=r"waiting for the moon\nlog tail"):
        wait_until(lambda: False, 0.05, "the moon", details=lambda: "log tail")
