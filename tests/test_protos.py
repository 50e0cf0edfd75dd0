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
    from serving.protogen import explain_pb2, explain_pb2_grpc, grpc_service_pb2, grpc_service_pb2_grpc

    request = grpc_service_pb2.ModelInferRequest(model_name="m", raw_input_contents=[b"\x00"])
    assert grpc_service_pb2.ModelInferRequest.FromString(request.SerializeToString()) == request
    assert hasattr(grpc_service_pb2_grpc, "GRPCInferenceServiceServicer")
    assert hasattr(explain_pb2_grpc, "ExplainServiceStub")
    # Field numbers clients depend on.
    fields = grpc_service_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert fields["raw_input_contents"].number == 7 and fields["outputs"].number == 6
    # The explain service keeps its own file and package, on Triton's messages.
    service = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"]
    assert service.full_name == "lumenserve.explain.ExplainService"
    assert service.methods_by_name["ModelExplain"].input_type.full_name == "inference.ModelInferRequest"


def _serialized_file(module_path: Path) -> bytes:
    """The FileDescriptorProto bytes a generated ``*_pb2.py`` adds to protobuf's pool."""
    import ast

    for node in ast.walk(ast.parse(module_path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            value = ast.literal_eval(node.args[0])
            assert isinstance(value, bytes)
            return value
    raise AssertionError(f"no serialized descriptor in {module_path}")


def test_descriptors_are_tritons_byte_for_byte() -> None:
    """Identical files are what lets protobuf's pool hold ours and tritonclient's in one process."""
    import tritonclient.grpc

    theirs = Path(tritonclient.grpc.__file__).parent
    for ours, triton in (("grpc_service_pb2.py", "service_pb2.py"), ("model_config_pb2.py", "model_config_pb2.py")):
        assert _serialized_file(ROOT / "serving" / "protogen" / ours) == _serialized_file(theirs / triton), ours


def test_repository_messages_read_both_client_families() -> None:
    from serving.grpc.convert import repository_answer, repository_model_name
    from serving.protogen import grpc_service_pb2 as pb

    assert repository_model_name(pb.RepositoryModelLoadRequest(model_name="tiny")) == "tiny"  # Triton: field 2
    kserve_request = b"\x0a\x04tiny"  # KServe's RepositoryModelLoadRequest {model_name = 1}
    assert repository_model_name(pb.RepositoryModelLoadRequest.FromString(kserve_request)) == "tiny"
    answer = repository_answer(pb.RepositoryModelUnloadResponse, "tiny-" + "x" * 200).SerializeToString()
    assert answer == b"\x0a\xcd\x01tiny-" + b"x" * 200 + b"\x10\x01"  # KServe's {model_name = 1, isUnloaded = 2}
