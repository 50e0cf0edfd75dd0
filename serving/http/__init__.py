"""HTTP transport: OIP v2 REST (Starlette + uvicorn, orjson), binary tensor extension, /metrics."""
