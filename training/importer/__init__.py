"""``lumenserve import``: turn a user's ONNX file, TorchScript file, Hugging Face folder or
torchvision architecture + weights into a verified bundle (docs/import.md).

One module per source kind; :func:`import_model` detects the kind and dispatches.
"""

from training.importer.options import ImportOptions, ImportSourceError
from training.importer.run import import_model

__all__ = ["ImportOptions", "ImportSourceError", "import_model"]
