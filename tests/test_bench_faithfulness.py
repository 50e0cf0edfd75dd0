"""``python -m bench.faithfulness`` on the tiny bundles (random weights: only the table's shape
and bookkeeping are checked, not which method wins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import faithfulness as bench_faithfulness
from explain.params import HIGHER_IS_BETTER

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ITEMS = 4
FEW_STEPS = ["--deletion-steps", "4", "--insertion-steps", "4", "--road-steps", "2"]
IMAGE_SCORES = ["deletion_auc", "insertion_auc", "road_morf", "road_lerf"]
TEXT_SCORES = ["deletion_auc", "insertion_auc", "comprehensiveness", "sufficiency"]


def table_rows(out: str) -> dict[str, list[str]]:
    """The markdown table's rows: first cell -> the other cells."""
    rows = [line.strip("|").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.mark.parametrize(
    ("model", "recipe", "extra", "rows", "scores"),
    [
        (
            "tiny-image",
            "configs/fashion-mobilenetv2.yaml",
            ["--random-cells", "2"],
            ["integrated_gradients", "random_2x2", "random"],
            IMAGE_SCORES,
        ),
        ("tiny-text", "configs/sentiment-minilm.yaml", [], ["integrated_gradients", "random"], TEXT_SCORES),
    ],
)
def test_the_table_has_every_score_for_each_method_and_random(
    model_repo: Path,
    capsys: pytest.CaptureFixture[str],
    model: str,
    recipe: str,
    extra: list[str],
    rows: list[str],
    scores: list[str],
) -> None:
    args = ["--repository", str(model_repo), "--model", model, "--recipe", recipe, "--items", str(ITEMS)]
    bench_faithfulness.main([*args, "--methods", "integrated_gradients", *FEW_STEPS, *extra])
    out = capsys.readouterr().out
    assert f"{model}: {ITEMS} held-out test items (the test labels are not the model's)" in out
    table = table_rows(out)
    assert list(table) == ["attribution", *rows]
    assert table["attribution"] == [f"{n} {'↑' if n in HIGHER_IS_BETTER else '↓'}" for n in scores]
    for row in rows[:-1]:
        for cell in table[row]:  # "0.512 (3/4)": the mean and the items beating random
            mean, wins = cell.split(" ")
            assert 0.0 <= float(mean) <= 1.0 or "comprehensiveness" in scores  # AOPC scores are differences
            won, total = wins.strip("()").split("/")
            assert total == str(ITEMS) and 0 <= int(won) <= ITEMS
    assert all(float(cell) == float(cell) for cell in table["random"])  # numbers, not NaN


def test_wins_count_the_items_where_the_method_is_more_faithful() -> None:
    figures = bench_faithfulness.Figures(model="m", items=3, correct=0, params={})
    figures.scores = {
        "ig": {"deletion_auc": [0.1, 0.5, 0.3], "insertion_auc": [0.9, 0.2, 0.4]},
        "random": {"deletion_auc": [0.2, 0.4, 0.3], "insertion_auc": [0.5, 0.5, 0.5]},
    }
    assert figures.wins("ig", "deletion_auc") == 1  # lower is better; a tie does not count
    assert figures.wins("ig", "insertion_auc") == 1  # higher is better
    assert "| ig | 0.300 (1/3) | 0.500 (1/3) |" in figures.table()


def test_a_bundle_without_a_recipe_needs_one(model_repo: Path) -> None:
    with pytest.raises(SystemExit, match="carries no training recipe; give --recipe"):
        bench_faithfulness.main(["--repository", str(model_repo), "--model", "tiny-text", "--items", "2"])


def test_a_coarse_random_map_is_for_images_only(model_repo: Path) -> None:
    args = ["--repository", str(model_repo), "--model", "tiny-text", "--items", "2", "--random-cells", "2"]
    with pytest.raises(SystemExit, match="coarse random map applies to images only"):
        bench_faithfulness.main([*args, "--recipe", "configs/sentiment-minilm.yaml"])
