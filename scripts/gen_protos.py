"""Generate the Python gRPC modules from protos/ (the one command: `make protos`).

The .proto files live under protos/ at the path of the Python package they generate
into (protos/serving/protogen/x.proto -> serving/protogen/x_pb2.py), so the generated
imports (`from serving.protogen import inference_pb2`) resolve without editing.
Generated files are committed and never hand-edited; tests/test_protos.py fails when
they are stale against protos/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto under protos/ into out_root; return the written files."""
    sources = sorted(PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(s.relative_to(PROTO_ROOT)) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    written = []
    for s in sources:
        stem = s.relative_to(PROTO_ROOT).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            written.append(out_root / f"{stem}{suffix}")
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(out):
        print(path.relative_to(out))
