"""Serve lumenserve bundles in TorchServe 0.12: a custom handler, an archiver, a config writer.

- ``handler.py``: the ``BaseHandler`` subclass TorchServe runs (ONNX Runtime or TorchScript,
  the bundle's own preprocessing, top-k answers, explanations through ``explain/``).
- ``archive.py``: ``lumenserve archive REPO/NAME/VERSION --out MODEL_STORE`` builds the ``.mar``
  (the whole bundle folder inside) and writes ``config.properties``.
- ``config.py``: the ``config.properties`` writer (127.0.0.1 everywhere, no per-model installs).
- ``launcher.py``: start/stop a real TorchServe (used by tests and benchmarks).

See docs/torchserve.md.
"""
