"""Access: loopback by default, the repository API behind a bearer token (constant-time) on
both transports, and TLS on both transports from configured certificate files."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import psutil
import pytest
from pydantic import ValidationError

from serving.dataplane import DataPlane
from serving.errors import PermissionDenied, Unauthenticated
from serving.settings import ServingSettings
from tests.hardening.grpc_load import insecure_probe, repository_call
from tests.hardening.payloads import good_image_tensor
from tests.hardening.tls import self_signed_pair
from tests.hardening.wire import Call, grpc_calls, http_send, tensor_input
from tests.support.server import TOKEN, ServerOptions, ServerProcess

IMAGE = good_image_tensor(31)  # (1, 3, 32, 32)
NORMAL = Call("tiny-image", [tensor_input("input", IMAGE, "FP32")], outputs=["logits"])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_pair(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server_options(pair: tuple[Path, Path]) -> ServerOptions:
    """A TLS server started without --host (so the default bind is what it uses)."""
    cert, key = pair
    env = {"LUMENSERVE_TLS_CERT": str(cert), "LUMENSERVE_TLS_KEY": str(key)}
    return ServerOptions(("--models", "tiny-image"), env)


@pytest.fixture(scope="module")
def https(server: ServerProcess, pair: tuple[Path, Path]) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(pair[0]))
    with httpx.Client(base_url=f"https://{server.http_url}", verify=context, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def expected(image_bundle) -> np.ndarray:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    session = ort.InferenceSession(str(image_bundle.path("onnx")), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": IMAGE})[0]


# ---- bind ---------------------------------------------------------------------------------
def test_default_bind_is_loopback(monkeypatch: pytest.MonkeyPatch, server: ServerProcess) -> None:
    monkeypatch.delenv("LUMENSERVE_HOST", raising=False)
    assert ServingSettings().host == "127.0.0.1"
    assert server.proc is not None
    listening = [c.laddr for c in psutil.Process(server.proc.pid).net_connections("inet") if c.status == "LISTEN"]
    assert {server.http_port, server.grpc_port} <= {a.port for a in listening}
    for address in listening:  # gRPC reports the v4-mapped form ::ffff:127.0.0.1
        ip = ipaddress.ip_address(address.ip)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        assert (mapped or ip) == ipaddress.ip_address("127.0.0.1"), listening


# ---- TLS ----------------------------------------------------------------------------------
def test_https_serves_with_the_configured_certificate(https: httpx.Client, expected: np.ndarray) -> None:
    answer = http_send(https, NORMAL)
    assert answer.status == "200", answer
    np.testing.assert_allclose(answer.outputs["logits"], expected, rtol=1e-4, atol=1e-5)


def test_plaintext_and_unverified_clients_are_refused_by_the_tls_port(
    server: ServerProcess, worker: ThreadPoolExecutor
) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{server.http_url}/v2/health/live", timeout=10)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://{server.http_url}/v2/health/live", timeout=10)  # system CAs do not know our cert
    assert worker.submit(insecure_probe, server.grpc_url).result(60) == "UNAVAILABLE"


def test_grpc_over_tls(
    server: ServerProcess, worker: ThreadPoolExecutor, pair: tuple[Path, Path], expected: np.ndarray
) -> None:
    (answer,) = worker.submit(grpc_calls, server.grpc_url, [NORMAL], pair[0].read_bytes()).result(60)
    assert answer.status == "OK", answer
    np.testing.assert_allclose(answer.outputs["logits"], expected, rtol=1e-4, atol=1e-5)


def test_tls_needs_both_files(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    with pytest.raises(ValidationError, match="tls_cert and tls_key go together"):
        ServingSettings(tls_cert=pair[0])
    with pytest.raises(ValidationError, match="does not exist"):
        ServingSettings(tls_cert=pair[0], tls_key=tmp_path / "missing.pem")


# ---- repository token ---------------------------------------------------------------------
TOKEN_CASES = [
    ("no-header", None, 401, "UNAUTHENTICATED", "needs 'authorization: Bearer <token>'"),
    ("wrong-scheme", f"Basic {TOKEN}", 401, "UNAUTHENTICATED", "must be 'Bearer <token>'"),
    ("bearer-only", "Bearer", 401, "UNAUTHENTICATED", "Bearer"),
    ("wrong-token", "Bearer not-the-token", 403, "PERMISSION_DENIED", "wrong repository token"),
    ("token-prefix", f"Bearer {TOKEN[:-1]}", 403, "PERMISSION_DENIED", "wrong repository token"),
    ("token-longer", f"Bearer {TOKEN}x", 403, "PERMISSION_DENIED", "wrong repository token"),
]


@pytest.mark.parametrize(
    ("case", "header", "http_status", "grpc_code", "message"), TOKEN_CASES, ids=[c[0] for c in TOKEN_CASES]
)
def test_repository_api_needs_the_token(
    case: str,
    header: str | None,
    http_status: int,
    grpc_code: str,
    message: str,
    https: httpx.Client,
    server: ServerProcess,
    worker: ThreadPoolExecutor,
    pair: tuple[Path, Path],
) -> None:
    headers = {"authorization": header} if header is not None else {}
    for method, path in (
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/tiny-image/unload"),
        ("POST", "/v2/repository/models/tiny-image/load"),
    ):
        response = https.request(method, path, headers=headers)
        assert response.status_code == http_status, (path, response.text)
        assert message in response.json()["error"]
    for action in ("unload", "load"):
        code, details = worker.submit(
            repository_call, server.grpc_url, action, "tiny-image", header, pair[0].read_bytes()
        ).result(60)
        assert (code, message in details) == (grpc_code, True), details


def test_right_token_works_on_both_transports(
    https: httpx.Client, server: ServerProcess, worker: ThreadPoolExecutor, pair: tuple[Path, Path]
) -> None:
    bearer = f"Bearer {TOKEN}"
    index = https.post("/v2/repository/index", headers={"authorization": bearer})
    assert index.status_code == 200 and {"name": "tiny-image", "version": "1", "state": "READY"} in index.json()
    cert = pair[0].read_bytes()
    assert worker.submit(repository_call, server.grpc_url, "load", "tiny-image", bearer, cert).result(120) == ("OK", "")
    # names that would leave the repository are refused before the file system is touched
    for name in ("..", "a b", "x\x00"):
        code, details = worker.submit(repository_call, server.grpc_url, "load", name, bearer, cert).result(60)
        assert code == "INVALID_ARGUMENT" and "invalid model name" in details
    response = https.post("/v2/repository/models/%2E%2E/load", headers={"authorization": bearer})
    assert response.status_code == 400 and "invalid model name" in response.json()["error"]
    assert http_send(https, NORMAL).status == "200"


def test_token_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """authorize() compares with hmac.compare_digest (time independent of where the tokens differ)."""
    import serving.dataplane as dataplane

    calls: list[tuple[bytes, bytes]] = []
    real = dataplane.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(dataplane.hmac, "compare_digest", spy)
    fake = SimpleNamespace(settings=SimpleNamespace(repository_token="s3cret"))
    DataPlane.authorize(fake, "Bearer s3cret")  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        DataPlane.authorize(fake, "Bearer s3cres")  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        DataPlane.authorize(fake, None)  # type: ignore[arg-type]
    assert calls == [(b"s3cret", b"s3cret"), (b"s3cres", b"s3cret")]
    fake.settings.repository_token = ""
    with pytest.raises(PermissionDenied, match="disabled"):
        DataPlane.authorize(fake, "Bearer anything")  # type: ignore[arg-type]
