"""A KServe 0.21 model server for an ONNX image classifier, written as KServe's docs show:
a ``kserve.Model`` whose ``predict`` runs ONNX Runtime, served by ``kserve.ModelServer``
(OIP v2 over REST and gRPC). Runs inside the kserve venv:

    python kserve_server.py --onnx_model_config model.json --model_name NAME --http_port P --grpc_port G

Inputs: ``input`` (FP32, already preprocessed) or ``image`` (BYTES, JPEG decoded here).
KServe listens on every interface; the benchmark keeps it on 127.0.0.1 (two patches below).
"""

from __future__ import annotations

import argparse

import numpy as np
import uvicorn
from grpc.aio import _server as grpc_aio_server
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve import model_server as kserve_model_server
from onnx_image_model import OnnxImageClassifier

_add_port = grpc_aio_server.Server.add_insecure_port
grpc_aio_server.Server.add_insecure_port = lambda self, address: _add_port(self, address.replace("[::]", "127.0.0.1"))
_config_init = uvicorn.Config.__init__


def _loopback_config(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    _config_init(self, *args, **(kwargs | {"host": "127.0.0.1"}))


uvicorn.Config.__init__ = _loopback_config  # type: ignore[method-assign]


class OnnxImageModel(Model):
    def __init__(self, name: str, config: str) -> None:
        super().__init__(name)
        self.config = config
        self.classifier: OnnxImageClassifier | None = None
        self.load()

    def load(self) -> bool:
        self.classifier = OnnxImageClassifier(self.config)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        assert self.classifier is not None
        tensor = payload.inputs[0]
        if tensor.datatype == "BYTES":
            answers = self.classifier.classify_jpegs(list(tensor.as_numpy().reshape(-1)))
        else:
            answers = self.classifier.classify(tensor.as_numpy())
        top = np.array(answers, dtype=np.object_)  # (batch, 5)
        output = InferOutput(name="probabilities", shape=list(top.shape), datatype="BYTES")
        output.set_data_from_numpy(top, binary_data=True)  # raw_output_contents, as Triton answers
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve_model_server.parser])
    parser.add_argument("--onnx_model_config", required=True, help="JSON: onnx path, preprocessing, labels.")
    args, _ = parser.parse_known_args()
    ModelServer().start([OnnxImageModel(args.model_name, args.onnx_model_config)])
