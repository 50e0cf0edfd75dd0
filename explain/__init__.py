"""lumenserve explain: Captum attributions and attention views, rendered and scored.

Layout (one method per file, Captum style: built from the model, called with the data):
``methods/`` (the registry and the methods), ``render.py`` (PNG / HTML),
``faithfulness.py`` (deletion AUC, infidelity), ``engine.py`` (a bundle's eager twin,
twin check, per-item results), ``cli.py`` (``lumenserve explain``, a client of the server).
"""

import lumenserve.env as _env  # noqa: F401  (sets ORT_DISABLE_TELEMETRY before onnxruntime loads)
from explain.errors import ExplainError, ExplainParameterError, UnsupportedMethodError
from explain.explanation import Explanation, TextInputs

__all__ = ["ExplainError", "ExplainParameterError", "Explanation", "TextInputs", "UnsupportedMethodError"]
