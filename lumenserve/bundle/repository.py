"""A model repository: ``REPO/NAME/VERSION/`` folders of bundles.

The folder given as the repository may also be one model's folder (``VERSION/`` bundles
directly inside), as KServe mounts a model at ``/mnt/models``: its one model is then named
by the bundles' manifests instead of by a folder.
"""

from __future__ import annotations

from pathlib import Path

from lumenserve.bundle.errors import BundleError
from lumenserve.bundle.manifest import MANIFEST_NAME, NAME_PATTERN
from lumenserve.bundle.reader import read_manifest


def check_model_name(name: str) -> str:
    """Refuse names that could leave the repository or confuse routing."""
    if not NAME_PATTERN.match(name) or ".." in name:
        raise BundleError(f"invalid model name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def single_model_name(folder: str | Path) -> str | None:
    """The model's name when ``folder`` is one model's folder (``VERSION/manifest.json`` inside), else None.

    Every version must name the same model: the name the model is served under."""
    root = Path(folder)
    versions = [v for v in list_versions(root) if (root / str(v) / MANIFEST_NAME).is_file()]
    if not versions:
        return None
    names = {read_manifest(root / str(v)).name for v in versions}
    if len(names) > 1:
        raise BundleError(f"{root}: the versions of one model folder name different models {sorted(names)}")
    return names.pop()


def list_models(repo: str | Path) -> list[str]:
    """Model names in the repository (folders holding at least one numeric version), or the one
    model of a single model folder."""
    root = Path(repo)
    if not root.is_dir():
        raise BundleError(f"{root}: model repository does not exist")
    single = single_model_name(root)
    if single is not None:
        return [single]
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.is_symlink() and NAME_PATTERN.match(p.name) and list_versions(p)
    )


def list_versions(model_dir: str | Path) -> list[int]:
    """Numeric version folders of one model, ascending."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit() and not p.is_symlink())


def model_folder(repo: str | Path, name: str) -> Path:
    """The folder holding ``name``'s versions: ``REPO/NAME``, or ``REPO`` itself when it is that
    model's single model folder. Refuses names that could leave the repository and symlinked
    model folders (BundleError)."""
    root = Path(repo)
    check_model_name(name)
    if single_model_name(root) == name:
        return root
    folder = root / name
    if folder.is_symlink() or folder.resolve().parent != root.resolve():
        raise BundleError(f"model {name!r} leaves the model repository (symlinked folder); refusing to load it")
    return folder


def version_dir(repo: str | Path, name: str, version: int | None = None) -> Path:
    """The folder of ``name`` at ``version`` (latest when None)."""
    model_dir = model_folder(repo, name)
    versions = list_versions(model_dir)
    if not versions:
        raise BundleError(f"model {name!r} has no versions in {repo}")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise BundleError(f"model {name!r} has no version {chosen}")
    return model_dir / str(chosen)


def next_version(repo: str | Path, name: str) -> int:
    versions = list_versions(Path(repo) / check_model_name(name))
    return versions[-1] + 1 if versions else 1
