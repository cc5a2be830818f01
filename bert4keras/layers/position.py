"""Position encodings: trainable absolute (BERT), and the relative/rotary
schemes of the other families."""

import keras
from keras import ops

from bert4keras import backend as B
from bert4keras.layers.core import register


@register
class PositionEmbedding(keras.layers.Layer):
    """Trainable absolute position embedding (BERT), merged into its input.

    Input ``(batch, seq_len, output_dim)``; output the same shape with row
    ``i`` of the table added (``merge_mode='add'``), multiplied (``'mul'``),
    concatenated (``'concat'``) or returned alone (``'zero'``).

    Raises:
        ValueError: when ``seq_len > input_dim`` (the table's rows, i.e.
            ``max_position``) and the length is known when the graph is built;
            on TensorFlow with an unknown length, an ``InvalidArgumentError``
            with the same message at run time.
    """

    def __init__(self, input_dim, output_dim, merge_mode="add",
                 embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.merge_mode = merge_mode
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs):
        seq_len = inputs.shape[1]
        if seq_len is None:
            seq_len = ops.shape(inputs)[1]
        B.check_max_length(seq_len, self.input_dim, self.name)
        table = ops.cast(self.embeddings, inputs.dtype)
        pos = ops.take(table, ops.arange(seq_len), axis=0)[None]
        if self.merge_mode == "add":
            return inputs + pos
        if self.merge_mode == "mul":
            return inputs * (pos + 1.0)
        if self.merge_mode == "zero":
            return ops.broadcast_to(pos, ops.shape(inputs)[:2] + (self.output_dim,))
        pos = ops.broadcast_to(pos, (ops.shape(inputs)[0], seq_len, self.output_dim))
        return ops.concatenate([inputs, pos], axis=-1)

    def compute_output_shape(self, input_shape):
        if self.merge_mode == "concat":
            return tuple(input_shape[:2]) + (input_shape[2] + self.output_dim,)
        return tuple(input_shape[:2]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            merge_mode=self.merge_mode,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config
