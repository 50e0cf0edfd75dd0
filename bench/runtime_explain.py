"""Perturbation explanations of an imported ONNX classifier (no eager weights): the explain
library on the served runtime vs bare Captum with ONNX Runtime as the forward.

The ``runtime_explain`` section of ``lumenserve bench`` (``--no-runtime-explain`` skips it;
the plan sets the image size, 224 px in the full run, and the rounds). A MobileNetV2 (random
weights, 10 classes) is exported to ONNX and imported with ``lumenserve import``'s library
call. Both contenders use the same :class:`serving.runtimes.onnx.OnnxRuntime` (the server's
session and threads) and the same image. The library runs with its default parameters and
the scores and rendering off (``infidelity`` off, ``deletion_steps`` 0, no PNG: the
attributions only, what bare Captum returns). Bare Captum gets the window/patches and samples
the library used, at ``perturbations_per_eval`` 1 (Captum's default), 8 and 64; the fastest
of them is the reference.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lumenserve.bundle import Bundle

LEAN = {"infidelity": False, "deletion_steps": 0, "render_png": False}
METHODS = ("occlusion", "kernel_shap")
PER_EVAL = (1, 8, 64)
"""``perturbations_per_eval`` of the bare Captum contenders."""
OURS = "lumenserve"
ARCH, CLASSES = "mobilenet_v2", 10


def build_bundle(folder: Path, size: int) -> Bundle:
    """A mobilenet_v2 (random weights) exported to ONNX at ``size`` px and imported."""
    import torch
    import torchvision

    from training.importer import ImportOptions, import_model
    from training.importer.options import ImageFlags

    torch.manual_seed(0)
    model = torchvision.models.get_model(ARCH, weights=None, num_classes=CLASSES).eval()
    source = folder / f"{ARCH}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(source), dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip
    labels = folder / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(CLASSES)))
    options = ImportOptions(task="image-classification", image=ImageFlags(image_size=size), labels_file=labels)
    return import_model(source, folder / "repo", ARCH, options)


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender; each round runs every contender once, in a rotated
    order (a busy shared machine's load drifts: no contender gets all the quiet minutes)."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def run(
    image_size: int = 224, rounds: int = 4, folder: Path | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Per method: median seconds of the library (``lumenserve_s``) and of bare Captum per
    ``perturbations_per_eval`` (``captum_ort_s``), and the library's ratio to the fastest of those."""
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="lumenserve-runtime-explain-") as tmp:
            return run(image_size, rounds, Path(tmp), log)
    import torch

    from explain.engine import BundleExplainer
    from serving.served import load_parts
    from serving.settings import ServingSettings

    folder.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(folder, image_size)
    _io, runtime = load_parts(bundle, ServingSettings(device="cpu"))
    rows = [0]  # forward rows asked for, counted during each method's warm-up call

    def forward_np(feed: dict[str, np.ndarray]) -> np.ndarray:
        rows[0] += len(feed["input"])
        return runtime.predict(feed)["logits"]  # (batch, classes)

    def forward(images: torch.Tensor) -> torch.Tensor:  # (batch, C, H, W) -> (batch, classes)
        return torch.from_numpy(forward_np({"input": images.detach().numpy()}))

    try:
        x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size)).astype(np.float32)  # (1, C, H, W)
        inputs = torch.from_numpy(x)
        target = int(forward(inputs).argmax())
        explainer = BundleExplainer(bundle, runtime=forward_np)
        result: dict[str, Any] = {
            "model": f"{ARCH}, random weights, {CLASSES} classes",
            "image_size": image_size,
            "rounds": rounds,
            "device": "cpu",
            "instances": runtime.parallel,
            "lean_params": LEAN,
            "methods": {},
        }
        for method in METHODS:

            def ours(m: str = method) -> Any:
                return explainer.explain({"input": x}, method=m, targets=[target], params=LEAN)

            rows[0] = 0
            used = ours().params  # warm-up; the window/patches and samples the library chose
            forward_rows = rows[0]
            contenders: dict[str, Callable[[], object]] = {OURS: ours}
            for pe in PER_EVAL:
                bare = _bare(method, used, forward, inputs, target, pe)
                bare()  # warm-up
                contenders[f"captum_ort_pe{pe}"] = bare
            times = interleaved(contenders, rounds)
            ours_s = statistics.median(times[OURS])
            bare_s = {str(pe): statistics.median(times[f"captum_ort_pe{pe}"]) for pe in PER_EVAL}
            reference = min(bare_s, key=bare_s.__getitem__)
            result["methods"][method] = {
                "params": {k: used[k] for k in ("window", "stride", "patch", "n_samples") if k in used},
                "perturbations_per_eval": used["perturbations_per_eval"],
                "forward_rows": forward_rows,
                "lumenserve_s": ours_s,
                "captum_ort_s": bare_s,
                "reference_per_eval": int(reference),
                "ratio": ours_s / bare_s[reference],
                "samples_s": times,
            }
            log(f"[bench] runtime_explain {method}: lumenserve {ours_s:.3f} s, Captum + ORT "
                + ", ".join(f"pe {pe} {t:.3f} s" for pe, t in bare_s.items()))  # fmt: skip
        return result
    finally:
        runtime.close()


def _bare(
    method: str,
    used: dict[str, Any],
    forward: Callable[[Any], Any],
    inputs: Any,
    target: int,
    per_eval: int,
) -> Callable[[], object]:
    """Bare Captum with the library's window/patches and samples, baseline zero (the library's default)."""
    from captum.attr import KernelShap, Occlusion

    from explain.methods.patches import patch_mask

    _, c, h, w = inputs.shape  # (1, C, H, W)
    if method == "occlusion":
        window, stride = used["window"], used["stride"]
        return lambda: Occlusion(forward).attribute(
            inputs, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
            baselines=0.0, target=target, perturbations_per_eval=per_eval,
        )  # fmt: skip
    mask, _ = patch_mask(h, w, used["patch"], "bench")  # (1, 1, H, W)
    return lambda: KernelShap(forward).attribute(
        inputs, baselines=0.0, target=target, feature_mask=mask, n_samples=used["n_samples"],
        perturbations_per_eval=per_eval, return_input_shape=True,
    )  # fmt: skip
