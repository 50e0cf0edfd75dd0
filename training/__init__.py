"""lumenserve training package.

Importing it sets ``ORT_DISABLE_TELEMETRY`` (and scratch folders) before onnxruntime loads,
through :mod:`lumenserve.env`. The OpenMP policy is the entry point's choice, not an import's:
``lumenserve train`` and ``lumenserve export`` call ``apply_omp_policy("train")`` (idle OpenMP
threads sleep) before torch loads; a script of your own can do the same.
"""

import lumenserve.env as _env  # noqa: F401  (sets ORT_DISABLE_TELEMETRY before onnxruntime loads)
