"""Data processing: read sources, clean (drops counted by reason), split, build datasets."""

from training.data.cleaning import DataReport, Example
from training.data.errors import DataError
from training.data.prepare import PreparedData, prepare_data

__all__ = ["DataError", "DataReport", "Example", "PreparedData", "prepare_data"]
