"""bert4keras: pretrained Transformers (BERT & co.) on Keras 3.

The public entry points are :func:`bert4keras.models.build_transformer_model`,
:class:`bert4keras.tokenizers.Tokenizer` and the helpers in
:mod:`bert4keras.snippets`.

``import bert4keras`` registers every layer, model class, activation,
optimizer and schedule of the library with ``keras.saving`` (package
``bert4keras``), so a ``.keras`` file saved from a bert4keras model loads in a
fresh process with ``keras.saving.load_model(path)`` after this one import.
It imports Keras and the modules that define those objects, nothing heavier
(no TensorFlow of its own, no tokenizers, no data sets).
"""

import keras

from bert4keras import allocator, graph_memory

# before any JAX computation runs (see bert4keras.allocator)
allocator.apply_for_backend(keras.backend.backend())
# eager functional calls release intermediate tensors after their last use
graph_memory.apply_from_environment()

# Imported for their side effect: registration with keras.saving.
from bert4keras import layers, models, optimizers  # noqa: E402

__version__ = "1.0.0.dev0"

__all__ = [
    "allocator",
    "backend",
    "checkpoints",
    "datasets",
    "generation",
    "graph_memory",
    "layers",
    "models",
    "optimizers",
    "snippets",
    "tokenizers",
]
