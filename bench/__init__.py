"""``lumenserve bench``: lumenserve against the in-process ceiling and TorchServe, in one run.

A layer of its own, above ``serving`` and ``training`` (it measures both) and below the
CLI; neither of them imports it.

- ``machine.py``: the machine description stored with every result.
- ``photos.py``: real JPEG photos and their preprocessed tensors (the server's own codec).
- ``loadgen.py``: closed-loop and fixed-rate asyncio load, latency percentiles.
- ``ceiling.py``: in-process ONNX Runtime with the server's codec and runtime (batch sweep).
- ``clients.py``: one request function per contender (tritonclient gRPC/HTTP, TorchServe).
- ``servers.py``: ``lumenserve serve`` and TorchServe as subprocesses, cold-start timing.
- ``explain_bench.py``: Captum in-process vs lumenserve explain vs TorchServe explanations.
- ``report.py``: targets (met/missed) and the markdown table of docs/benchmarks.md.
- ``train_throughput.py``: our Trainer vs a bare PyTorch loop (also runs on its own).
- ``faithfulness.py``: a bundle's explanations against a random attribution on held-out test
  items (runs on its own: ``python -m bench.faithfulness``).
- ``procstat.py``: a server's RSS, CPU time and listening sockets from /proc (its process tree).
- ``peers/``: KServe and MLServer in their own venvs holding the same ONNX file (``--peers``).
- ``runner.py``: one run, every section interleaved.
- ``cli.py``: the ``lumenserve bench`` command that interleaves everything.
"""
