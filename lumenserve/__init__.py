"""lumenserve: the shared ground floor (bundle format, process environment, CLI).

Importing any lumenserve package first runs :mod:`lumenserve.env`, which sets
``ORT_DISABLE_TELEMETRY=1`` and keeps scratch files out of ``/tmp`` and ``~/.cache``.
"""

from lumenserve import env as _env  # noqa: F401  (side effect: process environment)

__version__ = "0.1.0"
