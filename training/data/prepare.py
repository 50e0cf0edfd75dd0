"""From a recipe's data section to clean, split, labelled examples plus a data report."""

from __future__ import annotations

from dataclasses import dataclass

from training.config import DataConfig, SourceConfig
from training.data.cleaning import (
    DataReport,
    Example,
    class_counts,
    clean_images,
    clean_text,
    drop_duplicates,
    keep_labels,
    stratified_subsample,
    stratified_take,
)
from training.data.csv_manifest import read_csv_manifest
from training.data.errors import DataError
from training.data.idx import read_idx_pair
from training.data.image_folder import read_image_folder
from training.data.text import read_text_table

IMAGE_FORMATS = ("image_folder", "idx", "csv_manifest")
TEXT_FORMATS = ("csv", "jsonl")
SPLITS = ("train", "validation", "test")


@dataclass
class PreparedData:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    labels: list[str]
    report: DataReport

    def targets(self, split: str) -> list[int]:
        index = {name: i for i, name in enumerate(self.labels)}
        return [index[ex.label] for ex in getattr(self, split)]


ASSETS = {"fashion-mnist": "fashion_mnist_dir", "rotten-tomatoes": "rotten_tomatoes_csv"}


def resolve_path(path: str) -> str:
    """``asset:NAME[/REST]`` -> the offline asset's path (see lumenserve.assets); others unchanged."""
    if not path.startswith("asset:"):
        return path
    name, _, rest = path.removeprefix("asset:").partition("/")
    if name not in ASSETS:
        raise DataError(f"unknown asset {name!r} in {path!r} (known: {', '.join(ASSETS)})")
    import lumenserve.assets

    base = getattr(lumenserve.assets, ASSETS[name])()
    return str(base / rest) if rest else str(base)


def read_source(source: SourceConfig, task: str) -> list[Example]:
    source = source.model_copy(
        update={
            "path": resolve_path(source.path),
            "labels_path": source.labels_path and resolve_path(source.labels_path),
        }
    )
    image_task = task == "image-classification"
    if image_task != (source.format in IMAGE_FORMATS):
        kind = "an image" if image_task else "a text"
        raise DataError(f"{source.path}: format {source.format!r} cannot feed {kind} task")
    rows: list[tuple[object, str]]
    if source.format == "image_folder":
        rows = list(read_image_folder(source.path))
    elif source.format == "idx":
        if not source.labels_path:
            raise DataError(f"{source.path}: an idx source needs labels_path (the labels IDX file)")
        rows = list(read_idx_pair(source.path, source.labels_path))
    elif source.format == "csv_manifest":
        rows = list(read_csv_manifest(source.path, source.path_column, source.label_column))
    else:
        rows = list(read_text_table(source.path, source.format, source.text_column, source.label_column))
    return [Example(item, label) for item, label in rows]


def _clean(examples: list[Example], task: str, report: DataReport, split: str) -> list[Example]:
    if task == "image-classification":
        return clean_images(examples, report, split)
    return clean_text(examples, report, split)


def prepare_data(cfg: DataConfig, task: str) -> PreparedData:
    """Read, rename labels, clean, dedupe (within and across splits), split, subsample."""
    report = DataReport()
    given = {"train": cfg.train, "validation": cfg.validation, "test": cfg.test}
    splits: dict[str, list[Example]] = {}
    for split, source in given.items():
        if source is None:
            continue
        report.sources[split] = f"{source.format}:{source.path}"
        examples = read_source(source, task)
        report.read[split] = len(examples)
        for ex in examples:
            ex.label = cfg.label_names.get(ex.label, ex.label)
        splits[split] = _clean(examples, task, report, split)

    seen_train = sorted({ex.label for ex in splits["train"] if ex.label})
    labels = list(cfg.labels) if cfg.labels else seen_train
    allowed = set(labels)
    for split in list(splits):
        splits[split] = keep_labels(splits[split], allowed, report, split)
    present = sorted({ex.label for ex in splits["train"]})
    if len(present) < 2:
        found = ", ".join(map(repr, present)) or "none"
        raise DataError(
            f"training data ({report.sources['train']}) has {len(present)} class(es) after cleaning "
            f"({found}); a classifier needs at least two"
        )

    splits["train"] = drop_duplicates(splits["train"], report, "train")
    if "test" not in splits:
        splits["test"], splits["train"] = stratified_take(splits["train"], cfg.test_fraction, cfg.seed)
    if "validation" not in splits:
        fraction = cfg.val_fraction / (1 - (cfg.test_fraction if cfg.test is None else 0))
        splits["validation"], splits["train"] = stratified_take(splits["train"], fraction, cfg.seed + 1)
    train_keys = {ex.key for ex in splits["train"]}
    splits["validation"] = drop_duplicates(splits["validation"], report, "validation", train_keys)
    val_keys = {ex.key for ex in splits["validation"]}
    splits["test"] = drop_duplicates(splits["test"], report, "test", train_keys | val_keys)

    splits["train"] = stratified_subsample(splits["train"], cfg.max_train_samples, cfg.seed)
    splits["validation"] = stratified_subsample(splits["validation"], cfg.max_eval_samples, cfg.seed)
    splits["test"] = stratified_subsample(splits["test"], cfg.max_test_samples, cfg.seed)
    for split in SPLITS:
        if not splits[split]:
            raise DataError(f"the {split} split is empty after cleaning and splitting ({report.sources['train']})")
        report.class_counts[split] = class_counts(splits[split], labels)
    report.labels = labels
    return PreparedData(splits["train"], splits["validation"], splits["test"], labels, report)
