"""Data: the embedded digits, MNIST-style IDX files, CIFAR-10's binary files, CelebA, image folders,
arrays of your own (a registry of data sets: :func:`register_dataset`); binarization, checks,
validation splits, batches resident on the device or streamed from disk."""

from .arrays import load_array_dataset
from .batches import VALIDATION_SEED, minibatches, split_validation
from .checks import validate_data
from .cifar import CIFAR10_RECORD, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, read_cifar10, write_cifar10_file
from .datasets import (
    ARRAY_SUFFIXES,
    BINARIZE,
    DATASETS,
    DEFAULT_DATA_DIRS,
    IDX_DATASETS,
    Dataset,
    apply_binarization,
    binarize,
    check_data_options,
    check_dataset,
    is_array_path,
    load_dataset,
    load_digits,
    load_idx_dataset,
)
from .idx import IDX_DTYPES, IDX_FILES, find_idx_file, read_idx, write_idx
from .registry import DataOptions, DatasetSource, register_dataset
from .rows import Rows

__all__ = [
    "Dataset",
    "DatasetSource",
    "DataOptions",
    "register_dataset",
    "Rows",
    "load_dataset",
    "load_digits",
    "load_idx_dataset",
    "load_array_dataset",
    "is_array_path",
    "binarize",
    "apply_binarization",
    "validate_data",
    "check_dataset",
    "check_data_options",
    "minibatches",
    "split_validation",
    "VALIDATION_SEED",
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
    "read_cifar10",
    "write_cifar10_file",
    "CIFAR10_TRAIN_FILES",
    "CIFAR10_TEST_FILE",
    "CIFAR10_RECORD",
]
