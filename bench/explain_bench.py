"""Explanation latency: Captum in-process vs lumenserve explain (gRPC) vs TorchServe.

Every contender gets the same JPEG, the same method and the same parameters, and does the
same work: decode + preprocess, predict, attribute the predicted class.

- in-process: the bundle's eager model (``build_eager_model``) and plain Captum calls;
- lumenserve: ``lumenserve.explain.ExplainService/ModelExplain`` with the raw JPEG; ``lean``
  turns scores and rendering off (``infidelity`` off, ``deletion_steps`` 0, ``render_png``
  off: the attributions only, what bare Captum returns), ``default``
  is what a request without them gets (scores, overlay PNG). Each call uses a photo not yet
  explained with those parameters, so the server's explain cache never answers;
- TorchServe: our handler's ``/explanations`` (same parameters, lean), and for IG at
  n_steps 15 its built-in ``image_classifier`` (IG with n_steps fixed at 15, target 0).

:func:`run_compare` measures a ``methods`` request (several methods on one photo, sharing
the decode and the prediction) against the same methods asked one by one.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from bench.photos import Workload
from lumenserve.bundle import Bundle, TorchvisionArchitecture


@dataclass(frozen=True)
class MethodCase:
    key: str
    method: str
    params: dict[str, Any]


CASES = (
    MethodCase("integrated_gradients_15", "integrated_gradients", {"n_steps": 15, "internal_batch_size": 16}),
    MethodCase("integrated_gradients_50", "integrated_gradients", {"n_steps": 50, "internal_batch_size": 16}),
    MethodCase("grad_cam", "grad_cam", {}),
    MethodCase("saliency", "saliency", {}),
)
LEAN = {"infidelity": False, "deletion_steps": 0, "render_png": False}
COMPARE_METHODS = ("saliency", "grad_cam", "integrated_gradients")
COMPARE_PARAMS = {"n_steps": 15}
"""The compare section: default scores and overlays (what the page asks for), IG at 15 steps."""


class InProcessCaptum:
    """Plain Captum on the bundle's eager model, after the server's own preprocessing."""

    def __init__(self, bundle: Bundle, workload: Workload) -> None:
        import torch
        from captum.attr import IntegratedGradients, LayerGradCam, Saliency

        from lumenserve.bundle.eager import build_eager_model

        self.torch = torch
        self.model = build_eager_model(bundle).eval()
        self.workload = workload
        arch = bundle.manifest.architecture
        layer_name = arch.gradcam_layer if isinstance(arch, TorchvisionArchitecture) else None
        modules = dict(self.model.named_modules())
        if layer_name is None or layer_name not in modules:
            layer_name = [n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)][-1]
        self.ig = IntegratedGradients(self.model)
        self.saliency = Saliency(self.model)
        self.grad_cam = LayerGradCam(self.model, modules[layer_name])

    def explain(self, case: MethodCase, photo: int) -> np.ndarray:
        from captum.attr import LayerAttribution

        torch = self.torch
        x = torch.from_numpy(self.workload.codec([self.workload.jpegs[photo]]))  # (1, C, H, W)
        with torch.no_grad():
            target = int(self.model(x).argmax(dim=1)[0])
        if case.method == "integrated_gradients":
            attr = self.ig.attribute(x, target=target, **case.params)  # (1, C, H, W)
        elif case.method == "saliency":
            attr = self.saliency.attribute(x, target=target)  # (1, C, H, W)
        else:
            cam = self.grad_cam.attribute(x, target=target, relu_attributions=True)  # (1, 1, h, w)
            attr = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")  # (1, 1, H, W)
        return attr.detach().numpy()


class LumenExplainClient:
    """gRPC ModelExplain with the raw JPEG as a BYTES ``image`` input.

    The request and response are OIP v2 ``ModelInferRequest`` / ``ModelInferResponse``; the
    messages come from tritonclient (the load generator's own; byte-identical to
    ``serving.protogen``'s)."""

    METHOD = "/lumenserve.explain.ExplainService/ModelExplain"

    def __init__(self, target: str, model: str, workload: Workload) -> None:
        import grpc
        from tritonclient.grpc import service_pb2 as pb

        self.pb = pb
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 64 << 20)]
        )
        self.call = self.channel.unary_unary(
            self.METHOD,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        self.model = model
        self.workload = workload

    def explain(self, case: MethodCase, photo: int, extra: dict[str, Any]) -> dict[str, Any]:
        return self.request({"method": case.method} | case.params | extra, photo)

    def request(self, parameters: dict[str, Any], photo: int, variant: int = 0) -> dict[str, Any]:
        """One ModelExplain of photo ``photo`` with these request parameters; the response's.
        ``variant`` > 0 appends that many bytes after the JPEG's end marker: the same picture
        (decoders stop at the marker) with other bytes, so another section's cached answer
        for this photo is not reused."""
        request = self.pb.ModelInferRequest(model_name=self.model)
        for name, value in parameters.items():
            param = request.parameters[name]
            if isinstance(value, bool):
                param.bool_param = value
            elif isinstance(value, int):
                param.int64_param = value
            else:
                param.string_param = str(value)
        tensor = request.inputs.add(name="image", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(self.workload.jpegs[photo] + b"\0" * variant)
        response = self.call(request, timeout=300)
        params = {k: v.string_param for k, v in response.parameters.items() if v.HasField("string_param")}
        if params.get("explain_cache") == "hit":
            raise RuntimeError("lumenserve answered from its explain cache: the measurement would be void")
        return params

    def close(self) -> None:
        self.channel.close()


class TorchServeExplainClient:
    """POST to TorchServe's ``/explanations/{model}``: our handler (JSON) or the built-in one (raw JPEG)."""

    def __init__(self, url: str, workload: Workload) -> None:
        self.client = httpx.Client(base_url=url, timeout=300)
        self.workload = workload

    def ours(self, model: str, case: MethodCase, photo: int) -> int:
        import base64

        body = {
            "image": base64.b64encode(self.workload.jpegs[photo]).decode(),
            "method": case.method,
            "parameters": case.params | LEAN,
        }
        response = self.client.post(f"/explanations/{model}", content=json.dumps(body),
                                    headers={"Content-Type": "application/json"})  # fmt: skip
        if response.status_code != 200:
            raise RuntimeError(f"TorchServe explanations {response.status_code}: {response.text[:300]}")
        return len(response.content)

    def builtin(self, model: str, photo: int) -> int:
        response = self.client.post(f"/explanations/{model}", content=self.workload.jpegs[photo],
                                    headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        if response.status_code != 200:
            raise RuntimeError(f"TorchServe built-in explanations {response.status_code}: {response.text[:300]}")
        return len(response.content)

    def close(self) -> None:
        self.client.close()


def timed(fn: Callable[..., Any], *args: Any) -> float:
    """Seconds one call of ``fn(*args)`` took."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def run_explain(
    bundle: Bundle,
    workload: Workload,
    lumen: LumenExplainClient,
    torchserve: TorchServeExplainClient | None,
    ts_ours: str | None,
    ts_builtin: str | None,
    reps: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Interleaved: for each repetition, each method, each contender in a rotating order."""
    captum = InProcessCaptum(bundle, workload)
    n = len(workload)
    contenders: dict[str, Callable[[MethodCase, int], Any]] = {
        "captum_in_process": captum.explain,
        "lumenserve_lean": lambda c, p: lumen.explain(c, p, LEAN),
        "lumenserve_default": lambda c, p: lumen.explain(c, p, {}),
    }
    if torchserve is not None and ts_ours is not None:
        contenders["torchserve_ours"] = lambda c, p: torchserve.ours(ts_ours, c, p)
    times: dict[str, dict[str, list[float]]] = {c.key: {name: [] for name in contenders} for c in CASES}
    errors: dict[str, str] = {}
    builtin_times: list[float] = []
    warm = n - 1  # the warm-up photo; the repetitions use photos 0, 1, ... (distinct: no cache hits)
    for case in CASES:  # warm-up: builds lumenserve's eager twin and TorchServe's explainer
        for name, fn in contenders.items():
            try:
                fn(case, warm)
            except Exception as exc:
                errors[f"{case.key}/{name}"] = f"{type(exc).__name__}: {exc}"[:400]
    if torchserve is not None and ts_builtin is not None:
        try:
            torchserve.builtin(ts_builtin, warm)
        except Exception as exc:
            errors["builtin"] = f"{type(exc).__name__}: {exc}"[:400]
    for rep in range(reps):
        photo = rep % max(1, n - 1)
        for ci, case in enumerate(CASES):
            names = list(contenders)
            shift = (rep + ci) % len(names)
            for name in names[shift:] + names[:shift]:
                if f"{case.key}/{name}" in errors:
                    continue
                try:
                    seconds = timed(contenders[name], case, photo)
                except Exception as exc:
                    errors[f"{case.key}/{name}"] = f"{type(exc).__name__}: {exc}"[:400]
                    continue
                times[case.key][name].append(seconds)
            builtin_due = case.key == "integrated_gradients_15" and "builtin" not in errors
            if builtin_due and torchserve is not None and ts_builtin is not None:
                try:
                    builtin_times.append(timed(torchserve.builtin, ts_builtin, photo))
                except Exception as exc:
                    errors["builtin"] = f"{type(exc).__name__}: {exc}"[:400]
        log(f"explain repetition {rep + 1}/{reps} done")
    result: dict[str, Any] = {"cases": {}, "errors": errors, "lean_params": LEAN, "repetitions": reps}
    for case in CASES:
        row = {name: _median(v) for name, v in times[case.key].items()}
        if case.key == "integrated_gradients_15":
            row["torchserve_builtin"] = _median(builtin_times)
        result["cases"][case.key] = {"method": case.method, "params": case.params, "median_s": row,
                                     "samples_s": times[case.key]}  # fmt: skip
    return result


def run_compare(
    lumen: LumenExplainClient,
    photos: int,
    reps: int,
    log: Callable[[str], None],
    methods: tuple[str, ...] = COMPARE_METHODS,
) -> dict[str, Any]:
    """Seconds of one ``methods`` request vs the same methods one by one (summed), per photo,
    alternating which goes first; each request's bytes are new, so the cache never answers."""
    joined = ",".join(methods)
    # Bytes no other request sent (run_explain's single-method answers are cached; so is each
    # repetition's): variant 1 for the first pass over the photos, 2 for the next, ...
    lumen.request({"methods": joined} | COMPARE_PARAMS, photos - 1, 1)  # warm-up: twin, explainers
    together: list[float] = []
    apart: list[float] = []
    for rep in range(reps):
        photo = rep % max(1, photos - 1)
        variant = 1 + rep // max(1, photos - 1)

        def one_by_one(photo: int = photo, variant: int = variant) -> None:
            for method in methods:
                lumen.request({"method": method} | _own(method, COMPARE_PARAMS), photo, variant)

        def compared(photo: int = photo, variant: int = variant) -> None:
            lumen.request({"methods": joined} | COMPARE_PARAMS, photo, variant)

        runs = [(apart, one_by_one), (together, compared)]
        for times, fn in runs if rep % 2 == 0 else runs[::-1]:
            times.append(timed(fn))
        log(f"explain compare repetition {rep + 1}/{reps} done")
    ratio = [t / a for t, a in zip(together, apart, strict=True)]
    return {"methods": list(methods), "params": COMPARE_PARAMS, "methods_request_s": _median(together),
            "one_by_one_s": _median(apart), "ratio": _median(ratio), "samples_s": {"methods_request": together,
            "one_by_one": apart}}  # fmt: skip


def _own(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a single-method request may carry (a compare request routes them itself)."""
    return params if method == "integrated_gradients" else {}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
