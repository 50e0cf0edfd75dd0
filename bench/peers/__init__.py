"""The peers users pick for a Python OIP v2 server, served the way their docs show.

- ``venvs.py``: one virtual environment per peer under ``$LUMENSERVE_HOME/peers/<name>``,
  built on first use from pinned requirements and reused while the pins match.
- ``onnx_image_model.py``: the model code both peers wrap (ONNX Runtime, Pillow preprocessing).
- ``kserve_server.py``: a KServe model server (runs inside the kserve venv).
- ``mlserver_runtime.py``: an MLServer custom runtime (runs inside the mlserver venv).
- ``servers.py``: start, readiness, RSS and CPU time of both, as children of the benchmark.
- ``compare.py``: the peers section: lumenserve, KServe and MLServer in interleaved rounds.

Neither script imports lumenserve: each peer sees only the ONNX file and the preprocessing
numbers (resize, crop, mean, std) passed on its command line or in its settings.
"""
