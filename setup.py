import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

#: the optional features, each an extra: `pip install "pyrovae[EXTRA]"`; "all" is every one of them
FEATURES = {
    # pyrovae export / load_pretrained: model.safetensors
    "export": ["safetensors>=0.4"],
    # pyrovae export --onnx: torch.onnx.export (torch.export front end) and a runtime to serve the graphs
    "onnx": ["safetensors>=0.4", "onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
    # pyrovae.pretrained.hub: save_pretrained / from_pretrained / push_to_hub
    "hub": ["safetensors>=0.4", "huggingface-hub>=0.23"],
    # --logger tensorboard / --logger mlflow (csv needs nothing)
    "tensorboard": ["tensorboard>=2.10"],
    "mlflow": ["mlflow-skinny>=2.10"],
    # image folders and CelebA (--dataset folder:PATH, celeba)
    "images": ["pillow>=9.1"],
}
FEATURES["all"] = sorted({requirement for requirements in FEATURES.values() for requirement in requirements})

setup(
    name="pyrovae",
    # the version is written once, in pyrovae/__init__.py
    version=re.search(r'^__version__ = "([^"]+)"', (HERE / "pyrovae" / "__init__.py").read_text(), re.M).group(1),
    description="Variational autoencoders on Pyro, checked against the closed-form ELBO",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["pyrovae", "pyrovae.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",
        "pyro-ppl>=1.8.4",
        "numpy>=1.24",
        "arviz>=0.15",  # 0.x on Python 3.11, 1.x on >= 3.12: pyrovae/evaluation/arviz_compat.py serves both
        # the netCDF engine for --inference-data: ArviZ 0.x requires these itself, ArviZ 1.x leaves them to an extra
        "h5netcdf>=1.0.2",
        "h5py",
        "click>=8.0",
        "scikit-learn>=1.2",
        "matplotlib>=3.6",
        "pillow>=9.1",  # image grids are drawn with it (pyrovae/image_grid.py); matplotlib requires it too
        "tqdm>=4.60",
        # one writer per run directory: an flock the OS drops when the holder dies; from 4.0 a refused
        # process no longer truncates the lock file, which holds the holder's process id
        "filelock>=4.0",
        # run specs in TOML files (fit --config / --print-config): read by tomllib (tomli before 3.11)
        "tomli-w>=1.0",
        "tomli>=1.1; python_version < '3.11'",
    ],
    extras_require={
        "test": ["pytest>=7", "ruff>=0.4", "hypothesis>=6"],
        # the documentation site: mkdocs build --strict (.ci/run), the API reference from the docstrings
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
        **FEATURES,
    },
    entry_points={"console_scripts": ["pyrovae=pyrovae.__main__:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
