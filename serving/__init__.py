"""lumenserve serving package."""

import lumenserve.env as _env  # noqa: F401  (sets ORT_DISABLE_TELEMETRY before onnxruntime loads)
