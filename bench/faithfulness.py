"""Faithfulness of a bundle's explanations next to a random attribution, on held-out test items.

    python -m bench.faithfulness --repository REPO --model NAME [--items 32] [--methods a,b]

The items are a stratified sample of the test split the model was trained against, rebuilt
with training's own data preparation from the recipe in the bundle's manifest (``--recipe``
for a bundle that carries none: an imported model, a test bundle), preprocessed like the
server does. Each item is explained for its predicted class with every method (one
``explain_methods`` call per chunk of items: one prediction pass, batched score forwards)
and with a random attribution (:func:`explain.faithfulness.random_attributions`, seeded),
scored with the same :func:`explain.faithfulness.score_batch`. Images get ``deletion_auc``,
``insertion_auc``, ``road_morf`` and ``road_lerf``; text ``deletion_auc``, ``insertion_auc``,
``comprehensiveness`` and ``sufficiency``.

The markdown table gives per method and score the mean over the items and, in brackets, on
how many items the method is more faithful than the random attribution of the same item.
``--random-cells 2,4`` adds random maps as coarse as Grad-CAM's at a 2 x 2 or 4 x 4 layer
(``random_2x2``, ``random_4x4``, with their own count against the per-pixel one): how
blocky a ranking is moves the image scores by itself, so a coarse method is also worth
reading against a random map of its own coarseness.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lumenserve.env import apply_omp_policy

if TYPE_CHECKING:
    from explain.engine import BundleExplainer
    from lumenserve.bundle import Bundle

DEFAULT_METHODS = {
    "image-classification": "integrated_gradients,grad_cam",
    "text-classification": "integrated_gradients",
}
RANDOM = "random"
CHUNK = 16
"""Items per explain call (memory stays modest; the scores' forwards are batched within it)."""


@dataclass(frozen=True)
class ScoreSteps:
    deletion_steps: int = 10
    insertion_steps: int = 10
    road_steps: int = 4

    def params(self, text: bool) -> dict[str, Any]:
        """The :class:`explain.params.ScoreParams` fields for this kind of input."""
        common = {"deletion_steps": self.deletion_steps, "insertion_steps": self.insertion_steps}
        if text:
            return common | {"aopc": True}
        return common | {"road_steps": self.road_steps, "infidelity": False}


@dataclass
class Figures:
    model: str
    items: int
    correct: int
    """Items whose predicted class is their label (-1: the recipe's labels are not the model's)."""
    params: dict[str, Any]
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """method (and ``random``) -> score name -> one value per item."""
    seconds: float = 0.0

    def names(self) -> list[str]:
        return list(self.scores[RANDOM])

    def wins(self, method: str, name: str) -> int:
        """Items on which ``method`` is more faithful than the random attribution on score ``name``."""
        from explain.faithfulness import more_faithful

        pairs = zip(self.scores[method][name], self.scores[RANDOM][name], strict=True)
        return sum(more_faithful(name, m, r) for m, r in pairs)

    def table(self) -> str:
        from explain.faithfulness import HIGHER_IS_BETTER

        names = self.names()
        header = " | ".join(f"{n} {'↑' if n in HIGHER_IS_BETTER else '↓'}" for n in names)
        lines = [f"| attribution | {header} |", "|---" * (len(names) + 1) + "|"]
        for method, values in self.scores.items():
            cells = []
            for n in names:
                mean = f"{float(np.mean(values[n])):.3f}"
                cells.append(mean if method == RANDOM else f"{mean} ({self.wins(method, n)}/{self.items})")
            lines.append(f"| {method} | {' | '.join(cells)} |")
        return "\n".join(lines)


def load_recipe_of(bundle: Bundle, recipe_path: str | Path | None) -> Any:
    """The recipe the bundle was trained with (its manifest's ``training.recipe``), or ``recipe_path``."""
    from training.config import load_recipe, validate_recipe

    if recipe_path is not None:
        return load_recipe(recipe_path)
    raw = bundle.manifest.training.get("recipe")
    if not isinstance(raw, dict):
        raise ValueError(f"{bundle.root}: the manifest carries no training recipe; give --recipe")
    return validate_recipe(raw, source=f"{bundle.root} (manifest training.recipe)")


def held_out(
    explainer: BundleExplainer, recipe: Any, items: int, seed: int
) -> tuple[list[dict[str, np.ndarray]], list[str], list[str]]:
    """``items`` test examples (stratified): model inputs in chunks of ``CHUNK``, their labels and
    the recipe's label names."""
    from training.data.cleaning import stratified_subsample
    from training.data.prepare import prepare_data

    if recipe.task != explainer.task:
        raise ValueError(f"the recipe is for {recipe.task}, the model for {explainer.task}")
    data = prepare_data(recipe.data, recipe.task)
    test = stratified_subsample(data.test, items, seed)
    chunks = [test[i : i + CHUNK] for i in range(0, len(test), CHUNK)]
    if explainer.image_pre is None:
        return (
            [explainer.encode_texts([str(ex.item) for ex in c]) for c in chunks],
            [ex.label for ex in test],
            data.labels,
        )
    import torch

    from training.data.datasets import ImageDataset, image_transforms

    pre = explainer.image_pre
    transform = image_transforms(pre, train=False)
    inputs = []
    for c in chunks:
        dataset = ImageDataset(c, data.labels, transform, channels=pre.channels)
        inputs.append({explainer.image_input: torch.stack([dataset[i][0] for i in range(len(c))]).numpy()})
    return inputs, [ex.label for ex in test], data.labels  # each chunk (chunk, C, H, W)


def run(
    bundle: Bundle,
    *,
    items: int = 32,
    methods: str | None = None,
    steps: ScoreSteps | None = None,
    recipe_path: str | Path | None = None,
    method_params: dict[str, Any] | None = None,
    random_cells: Sequence[int] = (),
    seed: int = 0,
) -> Figures:
    """Explain ``items`` held-out test items with each method and a random attribution and score them.
    ``random_cells`` (images): also a random map as coarse as each of these grids (``random_NxN`` rows)."""
    import torch

    from explain import faithfulness
    from explain.engine import BundleExplainer
    from explain.explanation import TextInputs
    from explain.params import ScoreParams

    start = time.perf_counter()
    explainer = BundleExplainer(bundle)
    text = explainer.image_pre is None
    if text and random_cells:
        raise ValueError("random cells: a coarse random map applies to images only")
    methods = methods or DEFAULT_METHODS[explainer.task]
    score_fields = (steps or ScoreSteps()).params(text)
    chunks, labels, label_names = held_out(explainer, load_recipe_of(bundle, recipe_path), items, seed)
    params = {"render_png": False} | score_fields | (method_params or {})
    score_p = ScoreParams.model_validate(score_fields)
    same_labels = label_names == explainer.labels
    figures = Figures(model=bundle.name, items=len(labels), correct=0 if same_labels else -1, params=params)
    for k, chunk in enumerate(chunks):
        results = explainer.explain_methods(chunk, method=methods, params=params)
        first = results[0].items
        targets = [item.target for item in first]
        if same_labels:
            figures.correct += sum(label_names[item.predicted] == labels[k * CHUNK + i] for i, item in enumerate(first))
        batch: torch.Tensor | TextInputs = (
            TextInputs(torch.from_numpy(chunk["input_ids"]), torch.from_numpy(chunk["attention_mask"]))
            if text
            else torch.from_numpy(chunk[explainer.image_input])
        )
        logits = torch.from_numpy(np.stack([item.logits for item in first]))  # (chunk, classes)
        per_method = {r.method: [item.scores for item in r.items] for r in results}
        references = {f"{RANDOM}_{c}x{c}": c for c in random_cells} | {RANDOM: None}
        for name, cells in references.items():
            noise = faithfulness.random_attributions(batch, seed + k, cells=cells)  # (chunk, 1, H, W) or (chunk, seq)
            rand = faithfulness.score_batch(explainer.model, batch, noise, targets, logits, score_p)
            per_method[name] = [{n: float(v[i]) for n, v in rand.items()} for i in range(len(targets))]
        for method, rows in per_method.items():
            into = figures.scores.setdefault(method, {})
            for row in rows:
                for name, value in row.items():
                    into.setdefault(name, []).append(value)
    figures.seconds = time.perf_counter() - start
    return figures


def report(figures: Figures) -> str:
    accuracy = (
        f", predicted class right on {figures.correct}/{figures.items}"
        if figures.correct >= 0
        else " (the test labels are not the model's)"
    )
    settings = ", ".join(f"{k} {v}" for k, v in figures.params.items() if k != "render_png")
    return (
        f"{figures.model}: {figures.items} held-out test items{accuracy}; {settings}; "
        f"{figures.seconds:.0f} s\n\n{figures.table()}"
    )


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise SystemExit(f"--param {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def parse_cells(text: str) -> list[int]:
    try:
        cells = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise SystemExit(f"--random-cells {text!r}: expected comma-separated integers") from None
    if any(not 1 <= c <= 64 for c in cells):
        raise SystemExit(f"--random-cells {text!r}: each grid must have 1 to 64 cells a side")
    return cells


def main(argv: Sequence[str] | None = None) -> None:
    apply_omp_policy("train")  # before torch loads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", required=True, help="the model repository")
    parser.add_argument("--model", required=True, help="the model's name in the repository")
    parser.add_argument("--version", type=int, default=None, help="default: the latest")
    parser.add_argument("--items", type=int, default=32, help="held-out test items (1 to 640)")
    parser.add_argument("--methods", default=None, help="comma-separated (default: IG and Grad-CAM / IG)")
    parser.add_argument("--recipe", default=None, help="recipe whose test split to use (default: the manifest's)")
    parser.add_argument("--deletion-steps", type=int, default=10)
    parser.add_argument("--insertion-steps", type=int, default=10)
    parser.add_argument("--road-steps", type=int, default=4, help="images only")
    parser.add_argument(
        "--random-cells", default="", help="images: also random maps on these N x N grids, upsampled (e.g. 2,4)"
    )
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE for the methods (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="the item sample and the random attribution")
    args = parser.parse_args(argv)
    if not 1 <= args.items <= 640:
        raise SystemExit(f"--items must lie in [1, 640], got {args.items}")
    from explain.errors import ExplainError
    from lumenserve.bundle import load_bundle, version_dir

    try:
        bundle = load_bundle(version_dir(args.repository, args.model, args.version))
        figures = run(
            bundle,
            items=args.items,
            methods=args.methods,
            steps=ScoreSteps(args.deletion_steps, args.insertion_steps, args.road_steps),
            recipe_path=args.recipe,
            method_params=parse_params(args.param),
            random_cells=parse_cells(args.random_cells),
            seed=args.seed,
        )
    except (ValueError, ExplainError) as exc:  # bundle, recipe, data and parameter errors name the problem
        raise SystemExit(f"error: {exc}") from None
    print(report(figures))


if __name__ == "__main__":
    main()
