"""Triton's model configuration and statistics messages, built in-process and parsed strictly
into Triton's own protobuf messages (unknown field names fail the parse)."""

from __future__ import annotations

from google.protobuf import json_format

from lumenserve.bundle import TensorSpec
from serving.statistics import InferenceStatistics, RequestTimes
from serving.triton_config import ConfigFacts, model_config


def _facts(**overrides: object) -> ConfigFacts:
    values: dict[str, object] = {
        "name": "tiny-image",
        "runtime": "onnx",
        "inputs": [TensorSpec(name="input", datatype="FP32", shape=[-1, 3, 8, 8])],
        "outputs": [TensorSpec(name="logits", datatype="FP32", shape=[-1, 3])],
        "max_batch_size": 32,
        "max_queue_delay_s": 0.002,
        "max_queue_size": 256,
        "default_timeout_s": 30.0,
        "instances": 2,
        "gpu": False,
        "parameters": {"raw_input": "image"},
        "label_output": "logits",
    }
    values.update(overrides)
    return ConfigFacts(**values)  # type: ignore[arg-type]


def test_model_config_parses_into_tritons_message() -> None:
    from tritonclient.grpc import model_config_pb2

    config = model_config(_facts())
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    assert message.platform == "onnxruntime_onnx" and message.backend == "onnxruntime"
    assert message.max_batch_size == 32
    assert list(message.input[0].dims) == [3, 8, 8]  # batch dimension left out when batching
    assert message.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(message.output[0].dims) == [3]
    assert message.dynamic_batching.max_queue_delay_microseconds == 2000
    assert message.dynamic_batching.default_queue_policy.max_queue_size == 256
    assert message.dynamic_batching.default_queue_policy.default_timeout_microseconds == 30_000_000
    assert message.instance_group[0].count == 2
    assert message.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert message.parameters["raw_input"].string_value == "image"
    assert message.version_policy.latest.num_versions == 1


def test_non_batching_model_keeps_full_dims_and_no_dynamic_batching() -> None:
    from tritonclient.grpc import model_config_pb2

    facts = _facts(
        runtime="torchscript",
        max_batch_size=0,
        inputs=[TensorSpec(name="a", datatype="BYTES", shape=[2, 3])],
        outputs=[TensorSpec(name="b", datatype="INT64", shape=[2])],
    )
    message = json_format.ParseDict(model_config(facts), model_config_pb2.ModelConfig())
    assert message.platform == "pytorch_libtorch"
    assert list(message.input[0].dims) == [2, 3]
    assert message.input[0].data_type == model_config_pb2.TYPE_STRING
    assert not message.HasField("dynamic_batching")


def test_statistics_count_rows_requests_and_batches() -> None:
    from tritonclient.grpc import service_pb2

    stats = InferenceStatistics()
    stats.request_succeeded(3, RequestTimes(total=1000, queue=100, compute_input=200, compute_infer=500))
    stats.request_succeeded(1, RequestTimes(total=2000, queue=300, compute_infer=500))
    stats.request_failed(50)
    stats.batch_executed(4, 0, 500, 0)
    stats.batch_executed(1, 0, 400, 0)
    stats.batch_executed(4, 0, 600, 0)
    as_dict = stats.as_dict("m", "1")
    message = json_format.ParseDict(as_dict, service_pb2.ModelStatistics())
    assert message.inference_count == 4 and message.execution_count == 3
    assert message.inference_stats.success.count == 2 and message.inference_stats.success.ns == 3000
    assert message.inference_stats.fail.count == 1 and message.inference_stats.queue.ns == 400
    assert [(b.batch_size, b.compute_infer.count, b.compute_infer.ns) for b in message.batch_stats] == [
        (1, 1, 400),
        (4, 2, 1100),
    ]
    assert message.last_inference > 0
