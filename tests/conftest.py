"""Shared fixtures: tiny real bundles in a session-wide model repository, and one real server
per module (``server``, configured by the module's ``server_options``) with a ``worker``
thread pool for client calls that run alongside each other. Helpers live in ``tests/support/``."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lumenserve.bundle import Bundle
from lumenserve.env import apply_omp_policy  # (ORT_DISABLE_TELEMETRY first)
from tests.support.server import ServerOptions, ServerProcess

# Before torch loads: idle OpenMP threads spinning on a 2-core machine slow every other
# process (servers started by tests, ONNX Runtime) several-fold.
apply_omp_policy("train")


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding ``tiny-image/1`` and ``tiny-text/1`` (built once per session)."""
    from tests.support.bundles import make_image_bundle, make_text_bundle

    repo = tmp_path_factory.mktemp("model_repository")
    make_image_bundle(repo)
    make_text_bundle(repo)
    return repo


@pytest.fixture(scope="session")
def image_bundle(model_repo: Path) -> Bundle:
    from lumenserve.bundle import load_bundle

    return load_bundle(model_repo / "tiny-image" / "1")


@pytest.fixture(scope="session")
def text_bundle(model_repo: Path) -> Bundle:
    from lumenserve.bundle import load_bundle

    return load_bundle(model_repo / "tiny-text" / "1")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (OpenMP spinning costs more than it gives on 2 busy cores).
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def server_options() -> ServerOptions:
    """Override in a module to start its ``server`` with other arguments or environment."""
    return ServerOptions()


@pytest.fixture(scope="module")
def server(model_repo: Path, server_options: ServerOptions) -> Iterator[ServerProcess]:
    """A real ``lumenserve serve`` on port 0 for the module (``server.http_url``, ``server.grpc_url``)."""
    repo = server_options.repo or model_repo
    with ServerProcess(repo, *server_options.args, env=server_options.env) as running:
        yield running


@pytest.fixture(scope="module")
def worker() -> Iterator[ThreadPoolExecutor]:
    """Threads for client calls a test runs alongside each other (tritonclient, raw gRPC)."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="client") as pool:
        yield pool
