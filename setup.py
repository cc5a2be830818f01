"""Installs bert4keras: ``pip install .`` (library) or ``pip install .[test]``."""

from setuptools import find_packages, setup

setup(
    name="bert4keras",
    version="1.0.0.dev0",
    description="Pretrained Transformers (BERT, RoFormer, GPT2, T5, ...) on Keras 3, "
                "loading the original checkpoint formats",
    long_description=(open("README.md", encoding="utf-8").read()
                      if __import__("os").path.exists("README.md") else ""),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["bert4keras", "bert4keras.*", "pretraining", "pretraining.*"]),
    install_requires=[
        "keras>=3.8",
        "tensorflow>=2.16",
        "numpy",
        "sentencepiece",
        "h5py",
        "safetensors",
        "tqdm",
        "jieba",
        "tensorboard",
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-xdist>=3.8",  # pytest.ini: 2 worker processes, --no-loadscope-reorder
            "hypothesis",
            "transformers>=4.40",
            "torch==2.13.0",
            "jax[cpu]",
            "matplotlib",
            "ruff",  # tests/test_architecture.py lints the tree
            "flask",  # tests/test_compat_snippets.py serves a WebServing over localhost
        ],
        "plot": ["matplotlib"],  # python -m pretraining.plot_history
        "serve": ["flask"],  # bert4keras.snippets.WebServing
    },
)
