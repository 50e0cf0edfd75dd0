"""lumenserve training package.

Importing it (before torch) makes idle OpenMP threads sleep instead of spin
(``OMP_WAIT_POLICY=PASSIVE`` unless the user set it): on a shared 2-core machine spinning
threads of several processes slowed a fine-tuning step about 10x; sleeping ones cost
nothing measurable when the machine is otherwise idle.
"""

import os

import lumenserve.env as _env  # noqa: F401  (sets ORT_DISABLE_TELEMETRY before onnxruntime loads)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
