"""An MLServer 1.7 custom runtime for an ONNX image classifier, written as MLServer's docs
show: an ``MLModel`` whose ``load`` opens an ONNX Runtime session and whose ``predict``
decodes the request with MLServer's codecs. Runs inside the mlserver venv; the benchmark
writes ``settings.json`` and ``model-settings.json`` next to a copy of this file and runs
``mlserver start`` on that folder.

Inputs: ``input`` (FP32, already preprocessed) or ``image`` (BYTES, JPEG decoded here).
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from onnx_image_model import OnnxImageClassifier


class OnnxImageRuntime(MLModel):
    async def load(self) -> bool:
        assert self.settings.parameters is not None and self.settings.parameters.extra is not None
        self.classifier = OnnxImageClassifier(self.settings.parameters.extra["config"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = payload.inputs[0]
        if tensor.datatype == "BYTES":  # MLServer unpacks raw BYTES contents into a list of bytes
            answers = self.classifier.classify_jpegs(list(tensor.data))
        else:
            answers = self.classifier.classify(NumpyCodec.decode_input(tensor))  # (batch, 3, H, W)
        top = np.array(answers, dtype=np.object_)  # (batch, 5)
        output = ResponseOutput(
            name="probabilities", shape=list(top.shape), datatype="BYTES", data=[s.encode() for s in top.reshape(-1)]
        )
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[output])
