"""Write a new bundle version atomically: stage files, checksum them, write the manifest,
rename the staging folder to ``REPO/NAME/N`` (N = latest + 1)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lumenserve.bundle.manifest import FORMAT_VERSION, MANIFEST_NAME, ArtifactKind, Manifest
from lumenserve.bundle.reader import Bundle, load_bundle, sha256_file
from lumenserve.bundle.repository import check_model_name, next_version


def new_staging_dir(repo: str | Path, name: str) -> Path:
    """A fresh folder inside ``REPO/NAME`` to write artifacts into before finishing."""
    model_dir = Path(repo) / check_model_name(name)
    model_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))


def tree_artifacts(staging: Path, rel_dir: str, kind: ArtifactKind) -> list[tuple[str, ArtifactKind]]:
    """Every file under ``staging/rel_dir`` as an artifact of ``kind``."""
    base = staging / rel_dir
    return [(str(p.relative_to(staging)), kind) for p in sorted(base.rglob("*")) if p.is_file()]


def finish_bundle(
    staging: Path,
    artifacts: list[tuple[str, ArtifactKind]],
    **fields: Any,
) -> Bundle:
    """Checksum ``artifacts`` in ``staging``, write manifest.json, publish as the next version.

    ``fields`` are the remaining manifest fields (name, task, architecture, labels, ...).
    The manifest is validated before anything is published.
    """
    repo = staging.parent.parent
    name = fields["name"]
    version = next_version(repo, name)
    manifest = Manifest.model_validate(
        {
            "format_version": FORMAT_VERSION,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **fields,
            "artifacts": [{"path": rel, "kind": kind, "sha256": sha256_file(staging / rel)} for rel, kind in artifacts],
        }
    )
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    final = staging.parent / str(version)
    try:
        os.rename(staging, final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(final)
