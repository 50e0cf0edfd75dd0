"""The bundle format: manifest schema, reader/verifier, writer, eager rebuild."""

from lumenserve.bundle.errors import BundleError
from lumenserve.bundle.manifest import (
    FORMAT_VERSION,
    Artifact,
    ImagePreprocessing,
    ImportRecord,
    Manifest,
    ParityRecord,
    TensorSpec,
    TextPreprocessing,
    TorchvisionArchitecture,
    TransformersArchitecture,
)
from lumenserve.bundle.reader import Bundle, load_bundle, sha256_file
from lumenserve.bundle.repository import (
    check_model_name,
    list_models,
    list_versions,
    model_folder,
    single_model_name,
    version_dir,
)
from lumenserve.bundle.writer import finish_bundle, new_staging_dir, tree_artifacts

__all__ = [
    "FORMAT_VERSION",
    "Artifact",
    "Bundle",
    "BundleError",
    "ImagePreprocessing",
    "ImportRecord",
    "Manifest",
    "ParityRecord",
    "TensorSpec",
    "TextPreprocessing",
    "TorchvisionArchitecture",
    "TransformersArchitecture",
    "check_model_name",
    "finish_bundle",
    "list_models",
    "list_versions",
    "load_bundle",
    "model_folder",
    "new_staging_dir",
    "sha256_file",
    "single_model_name",
    "tree_artifacts",
    "version_dir",
]
