"""Hostile requests over gRPC and HTTP against a real ``lumenserve serve`` process.

Every case gets the status protocol.md's table names and a message that names the problem,
and right after it the same transport still answers a normal request with the right logits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.hardening.cases import GRPC_ONLY, HTTP_ONLY, IMAGE, MAX_BATCH, MAX_MESSAGE, SHARED, Case, HttpCase
from tests.hardening.wire import HTTP_OF_GRPC, Answer, Call, grpc_calls, http_answer, http_send, tensor_input
from tests.support.server import ServerOptions, ServerProcess

NORMAL = Call("tiny-image", [tensor_input("input", IMAGE, "FP32")], outputs=["logits"])


@pytest.fixture(scope="module")
def server_options() -> ServerOptions:
    env = {
        "LUMENSERVE_MAX_BATCH_SIZE": str(MAX_BATCH),
        "LUMENSERVE_MAX_MESSAGE_SIZE": str(MAX_MESSAGE),
        "LUMENSERVE_EXPLAIN_MAX_QUEUE": "64",
    }
    return ServerOptions(env=env)


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def expected_logits(image_bundle) -> np.ndarray:  # type: ignore[no-untyped-def]
    """tiny-image's logits for the normal request, from ONNX Runtime in this process."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(image_bundle.path("onnx")), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": IMAGE})[0]


def check_error(answer: Answer, status: str, pattern: str) -> None:
    assert answer.status == status, f"expected {status}, got {answer.status}: {answer.message[:300]}"
    assert answer.message, "an error needs a message"
    assert "internal error" not in answer.message
    assert re.search(pattern, answer.message, re.IGNORECASE | re.DOTALL), f"{answer.message[:300]!r} !~ {pattern!r}"


def check_normal(answer: Answer, expected: np.ndarray) -> None:
    assert answer.status in ("OK", "200"), f"normal request after a hostile one failed: {answer}"
    np.testing.assert_allclose(answer.outputs["logits"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", SHARED, ids=[c.id for c in SHARED])
def test_hostile_over_grpc(
    case: Case, server: ServerProcess, worker: ThreadPoolExecutor, expected_logits: np.ndarray
) -> None:
    hostile, normal = worker.submit(grpc_calls, server.grpc_url, [case.call, NORMAL]).result(120)
    check_error(hostile, case.status, case.message)
    check_normal(normal, expected_logits)


@pytest.mark.parametrize("case", SHARED, ids=[c.id for c in SHARED])
def test_hostile_over_http(case: Case, http: httpx.Client, expected_logits: np.ndarray) -> None:
    hostile = http_send(http, case.call, case.http_headers)
    check_error(hostile, str(HTTP_OF_GRPC[case.status]), case.message)
    check_normal(http_send(http, NORMAL), expected_logits)


@pytest.mark.parametrize("case", HTTP_ONLY, ids=[c.id for c in HTTP_ONLY])
def test_hostile_http_framing(case: HttpCase, http: httpx.Client, expected_logits: np.ndarray) -> None:
    response = http.request(case.method, case.path, content=case.body, headers=case.headers)
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    check_error(http_answer(response), str(case.status), case.message)
    check_normal(http_send(http, NORMAL), expected_logits)


@pytest.mark.parametrize("case", GRPC_ONLY, ids=[c.id for c in GRPC_ONLY])
def test_hostile_grpc_framing(
    case: Case, server: ServerProcess, worker: ThreadPoolExecutor, expected_logits: np.ndarray
) -> None:
    hostile, normal = worker.submit(grpc_calls, server.grpc_url, [case.call, NORMAL]).result(120)
    check_error(hostile, case.status, case.message)
    check_normal(normal, expected_logits)


def test_no_case_reached_a_generic_internal_error(server: ServerProcess, http: httpx.Client) -> None:
    """After every table above ran (this test is last in the module), the server logged no
    unhandled error and counts no INTERNAL answer."""
    from tests.hardening.metrics import scrape, value

    samples = scrape("", http)
    assert value(samples, "lumenserve_requests_total", status="INTERNAL") == 0
    log = "".join(server.lines)
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
