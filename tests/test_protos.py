"""Generated gRPC code matches protos/ (fails when someone edits a .proto and forgets `make protos`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    written = _load_generator().generate(tmp_path)
    assert written, "no .proto sources found"
    for fresh in written:
        rel = fresh.relative_to(tmp_path)
        committed = ROOT / rel
        assert committed.exists(), f"{rel} missing: run `make protos`"
        assert committed.read_text() == fresh.read_text(), f"{rel} is stale against protos/: run `make protos`"


def test_generated_code_imports() -> None:
    from serving.protogen import explain_pb2_grpc, inference_pb2, inference_pb2_grpc

    request = inference_pb2.ModelInferRequest(model_name="m", raw_input_contents=[b"\x00"])
    assert inference_pb2.ModelInferRequest.FromString(request.SerializeToString()) == request
    assert hasattr(inference_pb2_grpc, "GRPCInferenceServiceServicer")
    assert hasattr(explain_pb2_grpc, "ExplainServiceStub")
    # Field numbers clients depend on.
    fields = inference_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert fields["raw_input_contents"].number == 7 and fields["outputs"].number == 6
