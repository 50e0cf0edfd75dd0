"""A model repository: ``REPO/NAME/VERSION/`` folders of bundles."""

from __future__ import annotations

from pathlib import Path

from lumenserve.bundle.errors import BundleError
from lumenserve.bundle.manifest import NAME_PATTERN


def check_model_name(name: str) -> str:
    """Refuse names that could leave the repository or confuse routing."""
    if not NAME_PATTERN.match(name) or ".." in name:
        raise BundleError(f"invalid model name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def list_models(repo: str | Path) -> list[str]:
    """Model names in the repository (folders holding at least one numeric version)."""
    root = Path(repo)
    if not root.is_dir():
        raise BundleError(f"{root}: model repository does not exist")
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


def version_dir(repo: str | Path, name: str, version: int | None = None) -> Path:
    """The folder of ``name`` at ``version`` (latest when None)."""
    model_dir = Path(repo) / check_model_name(name)
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
