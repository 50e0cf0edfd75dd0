"""Run inside a venv holding the ``kserve`` SDK (its pins clash with ours): drive a running
lumenserve with KServe's own v2 clients and print what they read as one JSON object.

Usage: python kserve_client_check.py SPEC_JSON, where SPEC_JSON is
``{"http": "http://127.0.0.1:P", "grpc": "127.0.0.1:Q", "model": NAME,
"inputs": [{"name", "datatype", "shape", "data"}], "binary": bool}``.
Output: server/model readiness from both clients, the gRPC server and model metadata (read
with the SDK's own v2 stub), and each client's infer outputs as lists.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb


def _inputs(spec: dict[str, Any], binary: bool) -> list[InferInput]:
    inputs = []
    for item in spec["inputs"]:
        if item["datatype"] == "BYTES":
            array = np.array([s.encode() for s in item["data"]], dtype=object).reshape(item["shape"])
        else:
            array = np.array(item["data"], dtype=item.get("numpy", "float32")).reshape(item["shape"])
        tensor = InferInput(item["name"], item["shape"], item["datatype"])
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _outputs(response: Any) -> dict[str, Any]:
    out = {}
    for output in response.outputs:
        array = output.as_numpy()
        if array.dtype == object:
            out[output.name] = [x.decode() if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
        else:
            out[output.name] = array.astype(np.float64).reshape(-1).tolist()
    return out


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    grpc_client = InferenceGRPCClient(spec["grpc"], timeout=30)
    try:
        result["grpc_live"] = await grpc_client.is_server_live()
        result["grpc_ready"] = await grpc_client.is_server_ready()
        result["grpc_model_ready"] = await grpc_client.is_model_ready(spec["model"])
        server = await grpc_client._client_stub.ServerMetadata(pb.ServerMetadataRequest())
        result["server_metadata"] = {"name": server.name, "extensions": list(server.extensions)}
        model = await grpc_client._client_stub.ModelMetadata(pb.ModelMetadataRequest(name=spec["model"]))
        result["model_metadata"] = {
            "name": model.name,
            "platform": model.platform,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in model.inputs],
        }
        request = InferRequest(spec["model"], _inputs(spec, binary=True), request_id="kserve-grpc")
        result["grpc_infer"] = _outputs(await grpc_client.infer(request))
    finally:
        await grpc_client.close()
    rest_client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        result["rest_live"] = await rest_client.is_server_live(spec["http"])
        result["rest_ready"] = await rest_client.is_server_ready(spec["http"])
        result["rest_model_ready"] = await rest_client.is_model_ready(spec["http"], spec["model"])
        for binary in (False, True):
            request = InferRequest(spec["model"], _inputs(spec, binary=binary), request_id="kserve-rest")
            response = await rest_client.infer(spec["http"], request, model_name=spec["model"])
            result[f"rest_infer_{'binary' if binary else 'json'}"] = _outputs(response)
    finally:
        await rest_client.close()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
