"""Read and verify bundles: schema, format version, paths, checksums, no pickles.

``load_bundle(folder)`` either returns a verified :class:`Bundle` or raises
:class:`BundleError` with a message that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from lumenserve.bundle.errors import BundleError
from lumenserve.bundle.manifest import (
    MANIFEST_NAME,
    SUPPORTED_FORMAT_VERSIONS,
    Artifact,
    ArtifactKind,
    Manifest,
)

PICKLE_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def path(self, kind: ArtifactKind) -> Path:
        """Absolute path of the first artifact of ``kind`` (BundleError if the bundle has none)."""
        artifact = self.manifest.artifact(kind)
        if artifact is None:
            raise BundleError(f"{self.root}: bundle has no {kind} artifact")
        return self.root / artifact.path

    def has(self, kind: ArtifactKind) -> bool:
        return self.manifest.artifact(kind) is not None

    def subdir(self, rel: str) -> Path:
        """A folder named by the manifest (tokenizer, config), checked to stay inside the bundle."""
        return _inside(self.root, rel)


def _inside(root: Path, rel: str) -> Path:
    if not rel or Path(rel).is_absolute() or "\\" in rel or "\x00" in rel:
        raise BundleError(f"{root}: artifact path {rel!r} escapes the bundle folder")
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise BundleError(f"{root}: artifact path {rel!r} escapes the bundle folder")
    return target


def _refuse_pickle(root: Path, artifact: Artifact, path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BundleError(f"{root}: refusing pickle artifact {artifact.path!r} (pickle formats are never loaded)")
    with path.open("rb") as fh:
        head = fh.read(2)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise BundleError(f"{root}: refusing pickle artifact {artifact.path!r} (file content is a pickle)")
    if artifact.kind == "torchscript":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as exc:
            raise BundleError(f"{root}: {artifact.path!r} is not a TorchScript archive") from exc
        if not any("/code/" in n for n in names):
            raise BundleError(
                f"{root}: refusing pickle artifact {artifact.path!r} (a torch.save pickle, not TorchScript)"
            )


def read_manifest(root: Path) -> Manifest:
    """Parse and schema-check ``root/manifest.json`` (no file checks)."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root}: no {MANIFEST_NAME}")
    try:
        raw = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: the manifest must be a JSON object")
    version = raw.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(
            f"{path}: unsupported bundle format version {version!r} "
            f"(this lumenserve reads {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors())
        raise BundleError(f"{path}: invalid manifest: {problems}") from exc


def load_bundle(folder: str | Path, *, verify_checksums: bool = True, model_name: str | None = None) -> Bundle:
    """Read, validate and verify the bundle in ``folder`` (``REPO/NAME/VERSION``).

    ``model_name``: the name the bundle must carry; default the parent folder's name (a single
    model folder mounted as the repository, like KServe's ``/mnt/models``, passes its name)."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder does not exist")
    manifest = read_manifest(root)
    if root.name != str(manifest.version):
        raise BundleError(f"{root}: folder name does not match manifest version {manifest.version}")
    if model_name is None and root.parent.name != manifest.name:
        raise BundleError(f"{root}: parent folder name does not match manifest name {manifest.name!r}")
    if model_name is not None and model_name != manifest.name:
        raise BundleError(f"{root}: manifest name {manifest.name!r} is not the model's name {model_name!r}")
    for artifact in manifest.artifacts:
        path = _inside(root, artifact.path)
        if not path.is_file():
            raise BundleError(f"{root}: artifact {artifact.path!r} is missing")
        _refuse_pickle(root, artifact, path)
        if verify_checksums:
            actual = sha256_file(path)
            if actual != artifact.sha256:
                raise BundleError(
                    f"{root}: checksum mismatch for {artifact.path!r}: "
                    f"manifest says {artifact.sha256[:12]}..., file has {actual[:12]}..."
                )
    return Bundle(root=root, manifest=manifest)
