"""The Starlette app: every OIP v2 REST route of protocol.md, explain, /metrics.

Handlers only convert and make one data-plane call; errors leave through the one table as
``{"error": "..."}``. ``/`` stays free: a static page folder (``settings.static_dir``, or
``serving/static/`` when present) is mounted there for the demo.
"""

from __future__ import annotations

import asyncio
import functools
import zlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from serving.dataplane import DataPlane
from serving.errors import InvalidInput, PayloadTooLarge, classify, clip_message, log_internal
from serving.http.convert import HEADER_LENGTH, from_response, to_request
from serving.http.reports import report_routes
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.observe import REQUEST_ID, RequestScope

JSON = "application/json"
DEFAULT_STATIC = Path(__file__).resolve().parent.parent / "static"
ACCEPTED_CONTENT_TYPES = ("", "application/json", "application/octet-stream")
Endpoint = Callable[[Any, Request], Awaitable[Response]]


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=JSON)


RETRY_AFTER_SECONDS = "1"
"""``Retry-After`` on every 503 (queue full, model not ready, draining): a second is long next
to a refusal's few milliseconds and short next to a model load."""


def error_response(exc: BaseException, where: str) -> Response:
    """The HTTP adapter of the error table: ``{"error": message}`` with the table's status;
    an internal error's details go to the log here, once."""
    classified = classify(exc)
    if classified.internal:
        log_internal(exc, where)
    response = json_response({"error": classified.message}, classified.http_status)
    if classified.http_status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def _index_ready_flag(body: bytes) -> bool:
    """The ``ready`` field of a repository index request body (``{}`` or empty: False)."""
    if not body.strip():
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput("the repository index body must be a JSON object") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("ready", False), bool):
        raise InvalidInput('the repository index body must be a JSON object like {"ready": true}')
    return bool(parsed.get("ready", False))


def mapped_errors(handler: Endpoint) -> Endpoint:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Request) -> Response:
        try:
            return await handler(self, request)
        except Exception as exc:
            return error_response(exc, f"HTTP {request.method} {request.url.path}")

    return wrapper


def observed(endpoint: str) -> Callable[[Endpoint], Endpoint]:
    """``mapped_errors`` for the inference roads, inside the request's scope
    (serving/observe.py): its request id comes back as ``X-Request-ID`` on every answer, its
    access log line and trace span end with the status the caller got."""

    def decorate(handler: Endpoint) -> Endpoint:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Request) -> Response:
            params = request.path_params
            version = params.get("version", "")
            route = "/v2/models/{model}" + ("/versions/{version}" if version else "") + f"/{endpoint}"
            span_name = f"{request.method} {route}"

            def span_attributes() -> tuple[Mapping[str, str], dict[str, Any]]:
                attributes = {"http.request.method": request.method, "http.route": route, "url.path": request.url.path}
                return request.headers, attributes

            scope = RequestScope.open(
                "http", endpoint, request.headers.get(REQUEST_ID), params["model"], version, span_name, span_attributes
            )
            response: Response | None = None
            status, message = "CANCELLED", ""  # unless answered below (499: the client left)
            try:
                response = await handler(self, request)
                if response.status_code < 400:
                    status = "OK"
            except Exception as exc:
                classified = classify(exc)
                status, message = classified.grpc_code.name, classified.message
                response = error_response(exc, f"HTTP {request.method} {request.url.path}")
            finally:
                scope.close(status, response.status_code if response is not None else 499, message)
            response.headers[REQUEST_ID] = scope.request_id
            return response

        return wrapper

    return decorate


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) and undoing gzip/deflate."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        body = _inflate(body, encoding, limit)
    elif encoding not in ("", "identity"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)")
    return body


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid {encoding} data ({exc})") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise InvalidInput(f"body is not valid {encoding} data (the compressed stream is truncated)")
    return out


class RestApi:
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.limit = dataplane.settings.max_message_size

    def routes(self) -> list[BaseRoute]:
        model = "/v2/models/{model}"
        versioned = "/v2/models/{model}/versions/{version}"
        return [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/models", self.models, methods=["GET"]),
            Route("/v2/models/stats", self.statistics, methods=["GET"]),
            *(Route(p, self.model_metadata, methods=["GET"]) for p in (model, versioned)),
            *(Route(p + "/config", self.model_config, methods=["GET"]) for p in (model, versioned)),
            *(Route(p + "/stats", self.statistics, methods=["GET"]) for p in (model, versioned)),
            *(Route(p + "/ready", self.model_ready, methods=["GET"]) for p in (model, versioned)),
            *(Route(p + "/infer", self.infer, methods=["POST"]) for p in (model, versioned)),
            *(Route(p + "/explain", self.explain, methods=["POST"]) for p in (model, versioned)),
            *(Route(p + "/explain", self.explain_methods, methods=["GET"]) for p in (model, versioned)),
            Route("/v2/repository/index", self.index, methods=["POST", "GET"]),
            Route("/v2/repository/models/{model}/load", self.load, methods=["POST"]),
            Route("/v2/repository/models/{model}/unload", self.unload, methods=["POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    @mapped_errors
    async def server_metadata(self, request: Request) -> Response:
        return json_response(self.dataplane.server_metadata())

    @mapped_errors
    async def live(self, request: Request) -> Response:
        live = self.dataplane.live()
        return json_response({"live": live}, 200 if live else 503)

    @mapped_errors
    async def ready(self, request: Request) -> Response:
        ready = self.dataplane.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    @mapped_errors
    async def model_metadata(self, request: Request) -> Response:
        params = request.path_params
        return json_response(self.dataplane.model_metadata(params["model"], params.get("version", "")))

    @mapped_errors
    async def model_config(self, request: Request) -> Response:
        params = request.path_params
        return json_response(await self.dataplane.model_config(params["model"], params.get("version", "")))

    @mapped_errors
    async def statistics(self, request: Request) -> Response:
        params = request.path_params
        stats = self.dataplane.model_statistics(params.get("model", ""), params.get("version", ""))
        return json_response({"model_stats": stats})

    @mapped_errors
    async def model_ready(self, request: Request) -> Response:
        params = request.path_params
        ready = self.dataplane.model_ready(params["model"], params.get("version", ""))
        return json_response({"name": params["model"], "ready": ready}, 200 if ready else 503)

    async def _infer_like(self, request: Request, explain: bool) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ACCEPTED_CONTENT_TYPES:
            raise InvalidInput(f"unsupported Content-Type {content_type!r} (send application/json)")
        body = await read_body(request, self.limit)
        params = request.path_params
        infer_request = to_request(body, request.headers.get(HEADER_LENGTH), params["model"], params.get("version", ""))
        call = self.dataplane.explain if explain else self.dataplane.infer
        try:
            response = await unless_disconnected(request, call(infer_request, "http"))
        except ClientGone:
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        content, header_length = from_response(response, infer_request)
        if header_length is None:
            return Response(content, media_type=JSON)
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    @observed("infer")
    async def infer(self, request: Request) -> Response:
        return await self._infer_like(request, explain=False)

    @observed("explain")
    async def explain(self, request: Request) -> Response:
        return await self._infer_like(request, explain=True)

    @mapped_errors
    async def explain_methods(self, request: Request) -> Response:
        params = request.path_params
        return json_response(await self.dataplane.explain_methods(params["model"], params.get("version", "")))

    @mapped_errors
    async def models(self, request: Request) -> Response:
        return json_response({"models": self.dataplane.ready_models()})

    @mapped_errors
    async def index(self, request: Request) -> Response:
        ready_only = False
        if request.method == "POST":
            body = await read_body(request, self.limit)
            ready_only = _index_ready_flag(body)
        return json_response(self.dataplane.index(request.headers.get("authorization"), ready_only))

    @mapped_errors
    async def load(self, request: Request) -> Response:
        await self.dataplane.load(request.path_params["model"], request.headers.get("authorization"))
        return json_response({"model_name": request.path_params["model"], "isLoaded": True})

    @mapped_errors
    async def unload(self, request: Request) -> Response:
        await self.dataplane.unload(request.path_params["model"], request.headers.get("authorization"))
        return json_response({"model_name": request.path_params["model"], "isUnloaded": True})

    async def metrics(self, request: Request) -> Response:
        return Response(self.dataplane.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


async def _no_route(request: Request) -> Response:
    path = request.scope["path"]
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.endpoint is not _no_route and route.path_regex.match(path):
            return json_response({"error": f"method {request.method} not allowed on {clip_message(path)}"}, 405)
    return json_response({"error": f"no such route: {request.method} {clip_message(path)}"}, 404)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "no such route" if exc.status_code == 404 else str(exc.detail)
    return json_response({"error": message}, exc.status_code)


class CloseWhileDraining:
    """ASGI wrapper: while the server drains, every response says ``Connection: close``, so a
    keep-alive client learns to stop reusing its connection from the answer itself instead of
    finding it closed under a request it just sent."""

    def __init__(self, app: Any, dataplane: DataPlane) -> None:
        self.app = app
        self.dataplane = dataplane

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.dataplane.draining:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


class ClientGone(Exception):
    """The HTTP client closed its connection before its answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Await a data-plane call; if the client hangs up first, cancel the call, as a gRPC
    cancellation does: a queued request leaves the queue and never reaches the model, and it
    is counted as ``reason="cancelled"``."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientGone("client disconnected")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is already read, so ``receive`` waits)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def build_app(dataplane: DataPlane) -> CloseWhileDraining:
    routes = RestApi(dataplane).routes()
    routes += report_routes(dataplane.settings.repository)  # read-only training reports (serving/http/reports.py)
    # Anything else under /v2 (e.g. a model name holding '/') is a JSON 404, not the static page's 405.
    routes.append(Route("/v2/{rest:path}", _no_route, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]))
    static = dataplane.settings.static_dir or (DEFAULT_STATIC if DEFAULT_STATIC.is_dir() else None)
    if static is not None:
        routes.append(Mount("/", app=StaticFiles(directory=str(static), html=True), name="static"))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    return CloseWhileDraining(app, dataplane)
