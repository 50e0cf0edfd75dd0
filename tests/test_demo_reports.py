"""The read-only report routes serve a bundle's `report` artifacts and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from serving.http.reports import report_routes
from tests.support.demo import add_report_version


@pytest.fixture(scope="module")
def client(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    repo = tmp_path_factory.mktemp("reports_repo")
    shutil.copytree(model_repo / "tiny-image", repo / "tiny-image")
    shutil.copytree(model_repo / "tiny-text", repo / "tiny-text")
    assert add_report_version(repo, "tiny-image") == 2
    (repo / "tiny-image" / "2" / "secret.txt").write_text("not an artifact")
    return TestClient(Starlette(routes=report_routes(repo)))


def test_report_redirects_to_the_bundles_html(client: TestClient) -> None:
    for url in ("/v2/models/tiny-image/report", "/v2/models/tiny-image/versions/2/report"):
        response = client.get(url, follow_redirects=False)
        assert response.status_code == 307
        assert response.headers["location"] == "/v2/models/tiny-image/versions/2/report/report/report.html"
    page = client.get("/v2/models/tiny-image/report")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "test accuracy 0.91" in page.text
    assert "default-src" in page.headers["content-security-policy"]


def test_relative_figure_links_resolve(client: TestClient) -> None:
    png = client.get("/v2/models/tiny-image/versions/2/report/report/curves.png")
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "url",
    [
        "/v2/models/tiny-image/versions/2/report/manifest.json",  # a real file, not a report artifact
        "/v2/models/tiny-image/versions/2/report/model.onnx",
        "/v2/models/tiny-image/versions/2/report/secret.txt",
        "/v2/models/tiny-image/versions/2/report/report/../manifest.json",
        "/v2/models/tiny-image/versions/2/report/report/..%2f..%2f..%2fetc%2fpasswd",
        "/v2/models/tiny-image/versions/2/report/%2fetc%2fpasswd",
        "/v2/models/tiny-image/versions/1/report",  # version 1 has no report
        "/v2/models/tiny-text/report",
        "/v2/models/nope/report",
        "/v2/models/tiny-image/versions/9/report/report/report.html",
    ],
)
def test_everything_else_is_a_json_404(client: TestClient, url: str) -> None:
    response = client.get(url, follow_redirects=False)
    assert response.status_code == 404, (url, response.status_code, response.text[:200])
    assert "error" in response.json()


def test_a_name_that_leaves_the_repository_matches_nothing(client: TestClient) -> None:
    assert client.get("/v2/models/..%2ftiny-image/report", follow_redirects=False).status_code == 404
    assert client.get("/v2/models/%2e%2e/report", follow_redirects=False).status_code == 404
