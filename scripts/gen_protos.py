"""Generate the Python gRPC modules from protos/ (the one command: `make protos`).

Triton's files (protos/grpc_service.proto, protos/model_config.proto) sit at the root of
protos/, as in Triton, so their descriptor file names and bytes equal those inside
``tritonclient.grpc`` and both sets of modules load in one process. Their modules go to
serving/protogen/, and the generated top-level imports between them (``import
model_config_pb2``) are rewritten to package imports, as tritonclient does for its own copy.
Every other .proto lives at the path of the package it generates into
(protos/serving/protogen/x.proto -> serving/protogen/x_pb2.py).
Generated files are committed and never hand-edited; tests/test_protos.py fails when they
are stale against protos/.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "serving.protogen"
"""Where the modules of the root-level (Triton) .proto files go."""
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto under protos/ into out_root; return the written files."""
    sources = sorted(PROTO_ROOT.rglob("*.proto"))
    top_level = sorted(s.stem for s in sources if s.parent == PROTO_ROOT)
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *[str(s.relative_to(PROTO_ROOT)) for s in sources],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed: " + " ".join(args))
        # `import model_config_pb2 as x` -> `from serving.protogen import model_config_pb2 as x`
        imports = re.compile(rf"^import ({'|'.join(map(re.escape, top_level))})(_pb2\S*) as ", re.MULTILINE)
        written = []
        for source in sources:
            stem = source.relative_to(PROTO_ROOT).with_suffix("")
            target_stem = Path(*PACKAGE.split("."), stem.name) if source.parent == PROTO_ROOT else stem
            for suffix in SUFFIXES:
                text = (Path(scratch) / f"{stem}{suffix}").read_text()
                target = out_root / f"{target_stem}{suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(imports.sub(rf"from {PACKAGE} import \1\2 as ", text) if top_level else text)
                written.append(target)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(out):
        print(path.relative_to(out))
