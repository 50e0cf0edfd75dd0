"""gRPC connections balanced across replicas: the server ends a connection after its max age.

A gRPC client keeps one HTTP/2 connection per target, so behind a Kubernetes Service (one
virtual IP) it stays on the replica it met first. With ``grpc_max_connection_age`` the server
sends GOAWAY after that age: the client's channel leaves READY and the next call opens a new
connection, which the Service may route to another replica. Observed here on a real server
(no models needed) through the channel's connectivity states.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.server import ServerProcess


def states_after_one_call(server: ServerProcess, watch_s: float) -> list[grpc.ChannelConnectivity]:
    """Connectivity states of a channel that made one health call, watched for ``watch_s``."""
    seen: list[grpc.ChannelConnectivity] = []
    lock = threading.Lock()

    def record(state: grpc.ChannelConnectivity) -> None:
        with lock:
            seen.append(state)

    with grpc.insecure_channel(server.grpc_url) as channel:
        channel.subscribe(record, try_to_connect=False)
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(watch_s)
        with lock:
            return list(seen)


@pytest.mark.slow  # seconds of real waiting: make test runs it, test-fast does not
def test_connection_age_sends_clients_away_and_default_keeps_them(tmp_path: Path) -> None:
    aged_env = {"LUMENSERVE_GRPC_MAX_CONNECTION_AGE": "1", "LUMENSERVE_GRPC_MAX_CONNECTION_AGE_GRACE": "1"}
    with ServerProcess(tmp_path, env=aged_env) as aged, ServerProcess(tmp_path) as plain:
        aged_states = states_after_one_call(aged, watch_s=5.0)  # age 1 s (+-10 % jitter) + grace 1 s
        plain_states = states_after_one_call(plain, watch_s=3.0)
    ready = grpc.ChannelConnectivity.READY
    assert ready in aged_states, aged_states
    after_ready = aged_states[aged_states.index(ready) + 1 :]
    assert after_ready and after_ready[-1] != ready, f"the aged connection was never closed: {aged_states}"
    assert plain_states[-1] == ready, f"without an age the connection stays: {plain_states}"
