"""Packaging for twoplusone: `pip install -e .` here, `--setup_file ./setup.py` on Dataflow.

Dataflow workers install this file, so it must ship every package the Beam
job's DoFns import (`preprocess`, and `model` for completeness).
"""

import pathlib
import re

import setuptools

# The version lives in preprocess/__init__.py; read, not imported, so setup needs no dependency.
VERSION = re.search(r'^__version__ = "(.+)"$',
                    (pathlib.Path(__file__).parent / "preprocess" / "__init__.py").read_text(),
                    re.M)[1]

REQUIRED = [
    "tensorflow>=2.16",
    "keras>=3.3",
    "apache-beam[tfrecord]>=2.55",
    # The headless build of the same project (opencv/opencv-python, same versions):
    # the GUI build links libGL.so.1, which slim images such as Dataflow's workers
    # lack (opencv/opencv-python#370); decoding and JPEG encoding are the same.
    "opencv-python-headless>=4.8",
    "remotezip>=0.12",
    "einops>=0.7",
    "tqdm>=4.60",
    "requests>=2.28",
    "google-crc32c>=1.5",  # the CRCs of the TFRecord framing (preprocess/shards.py)
    "matplotlib>=3.7",
    "tensorboard>=2.16",
    "pyyaml>=6",  # train.py --config files, read with yaml.safe_load
]

setuptools.setup(
    name="twoplusone",
    version=VERSION,
    description="Decode a video set once into TFRecords, then train (2+1)D ResNets fast.",
    packages=setuptools.find_packages(include=["preprocess", "preprocess.*",
                                               "model", "model.*"]),
    py_modules=["train"],
    python_requires=">=3.10",
    install_requires=REQUIRED,
    extras_require={
        "test": ["pytest>=7"],
        "gcp": ["apache-beam[gcp]>=2.55"],  # gs:// paths and the DataflowRunner
        "gpu": ["tensorflow[and-cuda]>=2.16"],  # TensorFlow with the CUDA libraries it needs
    },
)
