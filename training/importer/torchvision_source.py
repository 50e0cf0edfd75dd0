"""A torchvision architecture name + a weights file (safetensors, or a ``.pth`` state dict
read with ``torch.load(weights_only=True)``) -> a bundle with eager weights, via export."""

from __future__ import annotations

from pathlib import Path

import torch

from lumenserve.bundle import Bundle
from training.export import export_image_model
from training.importer.detect import PICKLE_FIX, is_safetensors, is_torchscript_archive
from training.importer.options import ImportOptions, ImportSourceError, read_labels
from training.importer.write import import_record, labels_for


def _state_dict(source: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(weights, how they were read); a plain pickle or a TorchScript file is refused."""
    if is_safetensors(source):
        from safetensors.torch import load_file

        return load_file(str(source)), "safetensors"
    if is_torchscript_archive(source):
        raise ImportSourceError(f"{source}: a TorchScript file, not weights; import it without --architecture")
    try:
        state = torch.load(str(source), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ImportSourceError(
            f"{source}: not a weights-only state dict (a general pickle is never loaded); {PICKLE_FIX}"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImportSourceError(f"{source}: holds no state dict of tensors; save model.state_dict() as safetensors")
    return {
        str(k).removeprefix("module."): v for k, v in state.items()
    }, "torch.load(weights_only=True), converted to safetensors"


def _build(arch: str, state: dict[str, torch.Tensor], source: Path) -> torch.nn.Module:
    """The architecture with the weights' number of classes, loaded strictly."""
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise ImportSourceError(
            f"{source}: --architecture {arch!r} is not a torchvision classification model "
            f"(see torchvision.models.list_models())"
        )
    default = torchvision.models.get_model(arch, weights=None).state_dict()
    differing = [k for k, v in default.items() if k in state and state[k].shape != v.shape]
    classes = {int(state[k].shape[0]) for k in differing}
    if len(classes) > 1 or any(default[k].shape[1:] != state[k].shape[1:] for k in differing):
        raise ImportSourceError(
            f"{source}: weights of {differing[:3]} do not fit {arch}; give the weights of that architecture"
        )
    num_classes = (
        classes.pop()
        if classes
        else int(next(v for k, v in reversed(default.items()) if k.endswith("weight")).shape[0])
    )
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        missing = [k for k in model.state_dict() if k not in state][:3]
        unexpected = [k for k in state if k not in model.state_dict()][:3]
        raise ImportSourceError(
            f"{source}: weights do not fit {arch} (missing {missing}, unexpected {unexpected});"
            f" give the weights of that architecture"
        ) from exc
    return model.eval()


def import_torchvision(source: Path, repo: Path, name: str, options: ImportOptions) -> Bundle:
    arch = options.architecture
    if arch is None:
        raise ImportSourceError(f"{source}: a weights file needs --architecture NAME (a torchvision model)")
    if options.task not in (None, "image-classification"):
        raise ImportSourceError(
            f"{source}: torchvision models import as image-classification; drop --task {options.task}"
        )
    pre = options.image.preprocessing(str(source))
    if pre.layout != "NCHW":
        raise ImportSourceError(f"{source}: torchvision models take NCHW input; drop --layout NHWC")
    state, how = _state_dict(source)
    model = _build(arch, state, source)
    sample = torch.randn(
        4, pre.channels, pre.crop_size, pre.crop_size, generator=torch.Generator().manual_seed(0)
    )  # (4, C, H, W)
    with torch.no_grad():
        try:
            scores = model(sample[:2])  # (2, classes)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0][:160]
            raise ImportSourceError(
                f"{source}: {arch} cannot run on {pre.channels}x{pre.crop_size}x{pre.crop_size} inputs ({first});"
                f" fix --image-size/--channels"
            ) from exc
    labels = read_labels(options.labels_file) if options.labels_file else None
    labels = labels_for(str(source), int(scores.shape[1]), labels, str(options.labels_file))
    convs = [
        n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and not n.startswith(("classifier", "fc"))
    ]
    record = import_record(
        "torchvision", source, {"input": sample[:2].numpy()}, {"logits": scores.numpy()}, [f"weights read with {how}"]
    )
    return export_image_model(
        model,
        arch_name=arch,
        labels=labels,
        preprocessing=pre,
        repo=repo,
        name=name,
        sample_inputs=sample,
        gradcam_layer=convs,  # export picks the deepest with a map of 7 x 7 or more
        tolerance=options.tolerance,
        imported=record,
    )
