"""lumenserve: the ground floor (bundle format, process environment, assets, child processes).

``lumenserve.cli`` (the command and the demo) is the top layer; it lives in this package
only for its name (see the layers contract in pyproject.toml).

Importing any lumenserve package first runs :mod:`lumenserve.env`, which sets
``ORT_DISABLE_TELEMETRY=1`` and keeps scratch files out of ``/tmp`` and ``~/.cache``.
"""

from lumenserve import env as _env  # noqa: F401  (side effect: process environment)

__version__ = "0.1.0"
