"""Data processing: readers, cleaning counts by reason, splits, and the bad-data messages."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.config import DataConfig, SourceConfig
from training.data import DataError, prepare_data
from training.data.cleaning import normalize_text
from training.data.idx import read_idx

TEXT = "text-classification"
IMAGE = "image-classification"


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _text_cfg(path: Path, fmt: str = "csv", **extra: object) -> DataConfig:
    return DataConfig.model_validate({"train": {"format": fmt, "path": str(path)}, **extra})


def _png(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def test_text_cleaning_counts_each_drop_by_reason(tmp_path: Path) -> None:
    rows = [f"review number {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    rows += [
        '"   ",pos',  # whitespace only
        ",neg",  # empty
        "review number 1 is good,pos",  # exact duplicate
        '"review   number 1\tis good",pos',  # duplicate after whitespace collapsing
        "a plot summary,plot",  # unknown label
    ]
    path = _csv(tmp_path / "reviews.csv", "text,label", rows)
    data = prepare_data(_text_cfg(path, labels=["neg", "pos"], val_fraction=0.25, test_fraction=0.25), TEXT)
    report = data.report.to_dict()
    assert report["read"] == {"train": 45}
    assert report["dropped"]["train"] == {"duplicate": 2, "empty_text": 2, "unknown_label": 1}
    assert data.labels == ["neg", "pos"]
    sizes = {s: sum(report["class_counts"][s].values()) for s in ("train", "validation", "test")}
    assert sizes == {"train": 20, "validation": 10, "test": 10}
    # stratified: both classes equally present in every split
    for split in ("train", "validation", "test"):
        counts = report["class_counts"][split]
        assert counts["neg"] == counts["pos"], (split, counts)
    texts = [ex.item for ex in data.train + data.validation + data.test]
    assert len(set(texts)) == 40


def test_given_splits_drop_duplicates_across_splits(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.jsonl", "", [])
    train.write_text("\n".join(json.dumps({"t": f"item {i}", "y": i % 2}) for i in range(20)))
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(json.dumps({"t": t, "y": 0}) for t in ["item 0", "item 2", "fresh one", "another"]))
    src = {"format": "jsonl", "text_column": "t", "label_column": "y"}
    cfg = DataConfig.model_validate(
        {"train": {**src, "path": str(train)}, "test": {**src, "path": str(test)}, "val_fraction": 0.2}
    )
    data = prepare_data(cfg, TEXT)
    assert data.report.dropped["test"]["duplicate_across_splits"] == 2
    assert sorted(ex.item for ex in data.test) == ["another", "fresh one"]
    assert data.labels == ["0", "1"]


def test_image_cleaning_counts_undecodable_empty_and_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for label, base in (("cat", 10), ("dog", 150)):
        for i in range(6):
            _png(root / label / f"{i}.png", base + i)
    _png(root / "cat" / "copy.png", 10)  # same bytes as cat/0.png
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    (root / "dog" / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("ignored: not in a class folder")
    cfg = DataConfig.model_validate(
        {"train": {"format": "image_folder", "path": str(root)}, "val_fraction": 0.2, "test_fraction": 0.2}
    )
    data = prepare_data(cfg, IMAGE)
    assert dict(data.report.dropped["train"]) == {"duplicate": 1, "undecodable_image": 1, "empty_image": 1}
    assert data.labels == ["cat", "dog"]
    assert len(data.train) + len(data.validation) + len(data.test) == 12


def test_csv_manifest_and_idx_sources(tmp_path: Path) -> None:
    for i in range(8):
        _png(tmp_path / "img" / f"{i}.png", 20 * i)
    manifest = _csv(tmp_path / "m.csv", "file,cls", [f"img/{i}.png,{'a' if i < 4 else 'b'}" for i in range(8)])
    cfg = DataConfig.model_validate(
        {"train": {"format": "csv_manifest", "path": str(manifest), "path_column": "file", "label_column": "cls"},
         "val_fraction": 0.25, "test_fraction": 0.25}
    )  # fmt: skip
    data = prepare_data(cfg, IMAGE)
    assert data.report.class_counts["train"] == {"a": 2, "b": 2}

    images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)  # (N, H, W)
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    (tmp_path / "x.idx.gz").write_bytes(gzip.compress(header + images.tobytes()))
    labels = np.array([0, 1, 0, 1, 0, 1], dtype=np.uint8)
    (tmp_path / "y.idx").write_bytes(bytes([0, 0, 0x08, 1]) + (6).to_bytes(4, "big") + labels.tobytes())
    assert np.array_equal(read_idx(tmp_path / "x.idx.gz"), images)
    cfg = DataConfig.model_validate(
        {"train": {"format": "idx", "path": str(tmp_path / "x.idx.gz"), "labels_path": str(tmp_path / "y.idx")},
         "label_names": {"0": "zero", "1": "one"}, "val_fraction": 0.3, "test_fraction": 0.3}
    )  # fmt: skip
    data = prepare_data(cfg, IMAGE)
    assert data.labels == ["one", "zero"]
    assert all(isinstance(ex.item, np.ndarray) and ex.item.shape == (4, 4) for ex in data.train)


def test_normalize_text() -> None:
    assert normalize_text("  ｆｕｌｌ\u00a0width \t\n text ") == "full width text"
    assert normalize_text("e\u0301") == "\u00e9"


# -- bad data: a clear message, never a silent crash ------------------------------------------


def test_unreadable_source_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=r"cannot read .*nope\.csv: no such file"):
        prepare_data(_text_cfg(missing), TEXT)
    with pytest.raises(DataError, match=r"cannot read image folder .*absent: no such directory"):
        prepare_data(DataConfig(train=SourceConfig(format="image_folder", path=str(tmp_path / "absent"))), IMAGE)
    bad_idx = SourceConfig(format="idx", path=str(tmp_path / "gone.gz"), labels_path=str(tmp_path / "l.gz"))
    with pytest.raises(DataError, match=r"cannot read IDX file .*gone\.gz"):
        prepare_data(DataConfig(train=bad_idx), IMAGE)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path / "r.csv", "review,label", ["good,pos", "bad,neg"])
    with pytest.raises(DataError, match=r"r\.csv: missing column 'text' \(available: review, label\)"):
        prepare_data(_text_cfg(path), TEXT)
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text('{"text": "ok", "label": "pos"}\n{"text": "no label here"}\n')
    with pytest.raises(DataError, match=r"r\.jsonl line 2: missing column 'label'"):
        prepare_data(_text_cfg(jsonl, "jsonl"), TEXT)


def test_fewer_than_two_classes_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path / "one.csv", "text,label", [f"text {i},pos" for i in range(10)] + ["   ,neg"])
    with pytest.raises(DataError, match=r"has 1 class\(es\) after cleaning \('pos'\); a classifier needs at least two"):
        prepare_data(_text_cfg(path), TEXT)


def test_cli_reports_bad_data_without_traceback(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lumenserve.cli import main

    data = _csv(tmp_path / "r.csv", "review,label", ["good,pos", "bad,neg"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: bad\ntask: text-classification\n"
        f"data: {{train: {{format: csv, path: '{data}'}}}}\n"
        "model: {family: transformers, name: asset:minilm}\n"
    )
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "missing column 'text'" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["train", str(recipe), "--out", str(tmp_path / "run"), "--set", "train.lr=-1"])
    assert result.exit_code == 1
    assert "train.lr" in result.output
