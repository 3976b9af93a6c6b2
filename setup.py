"""packnet_tf: many tasks in one Keras network with PackNet."""

import pathlib
import re

from setuptools import find_packages, setup

ROOT = pathlib.Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (ROOT / "packnet_tf" / "__init__.py").read_text(),
    re.M,
).group(1)

setup(
    name="packnet_tf",
    version=VERSION,
    description=(
        "PackNet for Keras 3 / TensorFlow: many tasks in one network by "
        "iterative pruning, deployable to TF Serving and LiteRT."
    ),
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["packnet_tf", "packnet_tf.*"]),
    # The command's launcher: keeps `--help` free of TensorFlow.
    py_modules=["packnet_tf_cli"],
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21",
        "keras>=3.15",
        "tensorflow-model-optimization>=0.8.1",
        "tensorflow-datasets>=4.9.10",
        "ai-edge-litert>=2.3.0",
        "scikit-learn>=1.3",
        "numpy",
        "pyyaml>=6",
        "matplotlib>=3.7",
        "tensorboard>=2.16",
    ],
    entry_points={
        "console_scripts": ["packnet-tf = packnet_tf_cli:main"],
    },
    extras_require={
        "dev": [
            "pytest>=8",
            # export tests: models.config and PredictRequest protos, and the
            # LiteRT runner's image decoding.
            "tensorflow-serving-api>=2.21",
            "pillow",
            # The documentation site (mkdocs.yml; tests/test_docs.py builds
            # it with --strict).
            "mkdocs>=1.6,<2",
            "mkdocs-material>=9.5",
            "mkdocstrings[python]>=1.0",
            "mkdocstrings-python>=2.0",
            "mkdocs-gen-files>=0.6",
            "mkdocs-literate-nav>=0.6",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
