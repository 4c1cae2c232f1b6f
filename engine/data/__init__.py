"""Reading calibration and evaluation data into re-iterable batch sources."""

from engine.data.archive import ZipLimits
from engine.data.images import ImagePreprocess, ImageSource
from engine.data.loading import DATA_FORMATS, load_data, load_labels
from engine.data.source import ArraySource, Batch, BatchSource

__all__ = [
    "ArraySource", "Batch", "BatchSource", "ImagePreprocess", "ImageSource", "ZipLimits",
    "DATA_FORMATS", "load_data", "load_labels",
]
