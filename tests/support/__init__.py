"""Helpers and fixtures for the tests (no tests here).

- ``server``: a real ``lumenserve serve`` process on port 0 (``ServerProcess``, ``ServerOptions``);
  the ``server`` and ``worker`` fixtures in ``tests/conftest.py`` are built on it.
- ``clients``: tritonclient calls (gRPC and HTTP, in the test process) and raw gRPC.
- ``ports``: ports for programs that must be told theirs in advance, with a retry on a clash.
- ``waiting``: ``wait_until`` for polling a condition instead of sleeping.
- ``bundles`` / ``toy_bundle``: tiny real bundles; ``demo``: report bundles and renamed copies.
"""
