"""bert4keras: pretrained Transformers (BERT & co.) on Keras 3.

The public entry points are :func:`bert4keras.models.build_transformer_model`,
:class:`bert4keras.tokenizers.Tokenizer` and the helpers in
:mod:`bert4keras.snippets`.
"""

__version__ = "1.0.0.dev0"
