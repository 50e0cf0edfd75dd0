"""lumenserve explain: Captum attributions and attention views, rendered and scored.

Layout (one method per file, Captum style: built from the model, called with the data):
``methods/`` (the registry and the methods), ``render.py`` (PNG / HTML),
``faithfulness/`` (one file per score), ``params.py`` (bounds, score names, method schemas),
``image_model.py`` / ``text_model.py`` (Hugging Face classifiers as plain modules),
``engine.py`` (a bundle's eager twin, twin check, per-item results, several methods per
request), ``cli.py`` (``lumenserve explain``, a client of the server).
"""

import lumenserve.env as _env  # noqa: F401  (sets ORT_DISABLE_TELEMETRY before onnxruntime loads)
from explain.errors import ExplainError, ExplainParameterError, UnsupportedMethodError
from explain.explanation import Explanation, TextInputs

__all__ = ["ExplainError", "ExplainParameterError", "Explanation", "TextInputs", "UnsupportedMethodError"]
