"""Perturbation explanations of an imported ONNX classifier (no eager weights), 224 px:
the explain library on the served runtime vs bare Captum with ONNX Runtime as the forward.

Both use the same :class:`serving.runtimes.onnx.OnnxRuntime` (the server's session, its
threads) and the same image; the library runs with its default parameters and the scores
and rendering off (``infidelity`` off, ``deletion_steps`` 0, no PNG: the attributions only,
what bare Captum returns). Bare Captum gets the same window/patches and samples, with
``perturbations_per_eval`` 1 (Captum's default) and 64 (the library's chunk); the faster
of the two is the reference.

    python -m bench.runtime_explain [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

LEAN = {"infidelity": False, "deletion_steps": 0, "render_png": False}
SIZE = 224


def build_bundle(folder: Path) -> Any:
    """A mobilenet_v2 (random weights, 10 classes) exported to ONNX at 224 px and imported."""
    import torch
    import torchvision

    from training.importer import ImportOptions, import_model
    from training.importer.options import ImageFlags

    torch.manual_seed(0)
    model = torchvision.models.get_model("mobilenet_v2", weights=None, num_classes=10).eval()
    source = folder / "mobilenet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, SIZE, SIZE),), str(source), dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip
    labels = folder / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(10)))
    options = ImportOptions(task="image-classification", image=ImageFlags(image_size=SIZE), labels_file=labels)
    return import_model(source, folder / "repo", "mobilenet", options)


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per contender; each round runs every contender once, in a rotated order
    (a busy shared machine's load drifts: no contender gets all the quiet minutes)."""
    for fn in contenders.values():
        fn()  # warm
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch
    from captum.attr import KernelShap, Occlusion

    from explain.engine import BundleExplainer
    from explain.methods.patches import patch_mask
    from serving.served import load_parts
    from serving.settings import ServingSettings

    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(Path(tmp))
        _io, runtime = load_parts(bundle, ServingSettings(device="cpu"))
        x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)  # (1, C, H, W)

        def forward_np(feed: dict[str, np.ndarray]) -> np.ndarray:
            return runtime.predict(feed)["logits"]  # (batch, classes)

        def forward(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(forward_np({"input": images.detach().numpy()}))

        explainer = BundleExplainer(bundle, runtime=forward_np)
        target = int(forward(torch.from_numpy(x)).argmax())
        inputs = torch.from_numpy(x)
        mask, _ = patch_mask(SIZE, SIZE, SIZE // 8, "bench")
        window, stride = SIZE // 8, SIZE // 16

        def bare_occlusion(per_eval: int) -> Callable[[], object]:
            return lambda: Occlusion(forward).attribute(
                inputs, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                baselines=0.0, target=target, perturbations_per_eval=per_eval,
            )  # fmt: skip

        def bare_kernel_shap(per_eval: int) -> Callable[[], object]:
            return lambda: KernelShap(forward).attribute(
                inputs, baselines=0.0, target=target, feature_mask=mask, n_samples=128,
                perturbations_per_eval=per_eval, return_input_shape=True,
            )  # fmt: skip

        cases = {"occlusion": bare_occlusion, "kernel_shap": bare_kernel_shap}
        print(f"device: cpu, {runtime.parallel} instance(s); {args.rounds} interleaved rounds; median seconds")
        for method, bare in cases.items():

            def ours_call(m: str = method) -> object:
                return explainer.explain({"input": x}, method=m, targets=[target], params=LEAN)

            contenders: dict[str, Callable[[], object]] = {"lumenserve": ours_call}
            contenders |= {f"captum+ORT pe={pe}": bare(pe) for pe in (1, 8, 64)}
            times = interleaved(contenders, args.rounds)
            ours = times.pop("lumenserve")
            best = min(times.values())
            listed = ", ".join(f"{name} {t:.3f} s" for name, t in times.items())
            print(f"{method}: lumenserve {ours:.3f} s | {listed} | ratio to the fastest {ours / best:.2f}x")
        runtime.close()


if __name__ == "__main__":
    main()
