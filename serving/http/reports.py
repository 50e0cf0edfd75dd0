"""Read-only training reports: ``GET /v2/models/{m}[/versions/{v}]/report[/{path}]``.

A bundle may carry ``report`` artifacts (training's ``report.html`` and its figures). These
routes serve exactly those files and nothing else:

- ``.../report`` redirects (307) to the bundle's HTML report, so its relative links resolve;
- ``.../versions/{v}/report/{path}`` serves ``path`` only when the bundle's manifest lists it
  with kind ``report`` and it resolves inside the version folder (no ``..``, no symlinks out);
- anything else is 404 ``{"error": ...}`` through the serving error table.

The files are read from the repository folder, not from the loaded models, so a report is
readable even while its model loads. Used by the showcase page (docs/demo.md).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from lumenserve.bundle import BundleError, Manifest, version_dir
from lumenserve.bundle.manifest import MANIFEST_NAME
from serving.errors import ModelNotFound, classify, log_internal

# The report is our own HTML, but it lives in a bundle anyone may have written: no outside
# fetches, no plugins; inline styles/scripts and data: images (self-contained reports) allowed.
REPORT_CSP = "default-src 'self' 'unsafe-inline' data:; connect-src 'self'; object-src 'none'; frame-ancestors 'self'"


def _bundle(repository: Path, model: str, version: str | None) -> tuple[Path, Manifest]:
    try:
        folder = version_dir(repository, model, int(version) if version is not None else None)
        manifest = Manifest.model_validate_json((folder / MANIFEST_NAME).read_bytes())
    except (BundleError, ValueError, OSError) as exc:
        raise ModelNotFound(f"no bundle for model {model!r} version {version or 'latest'}") from exc
    return folder, manifest


def _html_report(manifest: Manifest) -> str:
    pages = [a.path for a in manifest.artifacts if a.kind == "report" and a.path.endswith(".html")]
    if not pages:
        raise ModelNotFound(f"model {manifest.name!r} version {manifest.version} has no training report")
    return next((p for p in pages if p.rsplit("/", 1)[-1] == "report.html"), pages[0])


def report_routes(repository: Path) -> list[BaseRoute]:
    """The report routes for a repository folder (add them to the HTTP app's routes)."""
    repository = Path(repository)

    def error(exc: Exception) -> JSONResponse:
        classified = classify(exc)
        if classified.internal:
            log_internal(exc, "a training report")
        return JSONResponse({"error": classified.message}, status_code=classified.http_status)

    async def index(request: Request) -> Response:
        params = request.path_params
        try:
            _, manifest = _bundle(repository, params["model"], params.get("version"))
            page = _html_report(manifest)
        except ModelNotFound as exc:
            return error(exc)
        target = f"/v2/models/{manifest.name}/versions/{manifest.version}/report/{page}"
        return RedirectResponse(target, status_code=307)

    async def artifact(request: Request) -> Response:
        params = request.path_params
        try:
            folder, manifest = _bundle(repository, params["model"], params["version"])
            rel = params["path"]
            listed = {a.path for a in manifest.artifacts if a.kind == "report"}
            path = (folder / rel).resolve()
            if rel not in listed or not path.is_relative_to(folder.resolve()) or not path.is_file():
                raise ModelNotFound(f"model {manifest.name!r} has no report file {rel!r}")
        except ModelNotFound as exc:
            return error(exc)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": REPORT_CSP}
        return FileResponse(path, media_type=media_type, headers=headers)

    return [
        Route("/v2/models/{model}/report", index, methods=["GET", "HEAD"]),
        Route("/v2/models/{model}/versions/{version:int}/report", index, methods=["GET", "HEAD"]),
        Route("/v2/models/{model}/versions/{version:int}/report/{path:path}", artifact, methods=["GET", "HEAD"]),
    ]
