"""Data: the embedded digits, MNIST-style IDX files, arrays of your own; binarization, checks, batches."""

from .datasets import (
    ARRAY_SUFFIXES,
    BINARIZE,
    DATASETS,
    DEFAULT_DATA_DIRS,
    IDX_DATASETS,
    Dataset,
    apply_binarization,
    binarize,
    is_array_path,
    load_array_dataset,
    load_dataset,
    load_digits,
    load_idx_dataset,
    minibatches,
    validate_data,
)
from .idx import IDX_DTYPES, IDX_FILES, find_idx_file, read_idx, write_idx

__all__ = [
    "Dataset",
    "load_dataset",
    "load_digits",
    "load_idx_dataset",
    "load_array_dataset",
    "is_array_path",
    "binarize",
    "apply_binarization",
    "validate_data",
    "minibatches",
    "DATASETS",
    "IDX_DATASETS",
    "ARRAY_SUFFIXES",
    "DEFAULT_DATA_DIRS",
    "BINARIZE",
    "read_idx",
    "write_idx",
    "find_idx_file",
    "IDX_DTYPES",
    "IDX_FILES",
]
