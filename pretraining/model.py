"""The model ``pretraining.pretraining`` trains: a Transformer with its MLM / LM head.

Split out of :mod:`pretraining.pretraining` (which re-exports every name here).
For the masked LM the head runs only at the masked positions
(:class:`GatherPositions`), as Google's ``run_pretraining.py`` gathers
``masked_lm_positions``.
"""

import keras
from keras import ops

from bert4keras.layers import DropMask, register
from bert4keras.models import build_transformer_model


@register
class GatherPositions(keras.layers.Layer):
    """``[(batch, seq_len, hidden), (batch, P) int] -> (batch, P, hidden)``."""

    def call(self, inputs):
        x, positions = inputs
        index = ops.expand_dims(ops.cast(positions, "int32"), -1)
        return ops.take_along_axis(x, index, axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1]) + (input_shape[0][-1],)

    def compute_mask(self, inputs, mask=None):
        return None  # gathered positions: the weights say which count


def recompute_layer_names(num_hidden_layers):
    """Layers recomputed by ``--recompute``: every Transformer block, whole.

    ``build_transformer_model(..., recompute=True)`` wraps block ``i``
    (attention, feed-forward, dropouts, residual adds and norms) in one
    :class:`~bert4keras.models.recompute.RecomputeBlock` called ``Transformer-i``
    that runs under ``keras.remat``; these are their names.
    """
    return ["Transformer-%d" % i for i in range(num_hidden_layers)]


def build_pretraining_model(config_path, objective, max_predictions, init_checkpoint=None,
                            recompute=None, **kwargs):
    """The model trained and the :class:`~bert4keras.models.Transformer` it wraps.

    For ``objective='roberta'`` the training model takes an extra input
    ``Input-MLM-Positions`` ``(batch, max_predictions)`` and outputs MLM logits
    ``(batch, max_predictions, vocab)`` at those positions only. For ``gpt`` /
    ``unilm`` it outputs logits ``(batch, seq_len, vocab)``.  Under a mixed
    precision policy the logits are cast to float32 (``MLM-Logits-Float32``).
    With ``recompute=True`` every Transformer block is recomputed in the
    backward pass (see :func:`recompute_layer_names`); ``None`` follows the
    ``RECOMPUTE`` environment variable (off when unset).
    """
    application = {"roberta": "encoder", "gpt": "lm", "unilm": "unilm"}[objective]
    transformer = build_transformer_model(config_path, init_checkpoint, with_mlm="linear",
                                          application=application, recompute=recompute,
                                          return_keras_model=False, **kwargs)
    mixed = keras.mixed_precision.global_policy().compute_dtype != "float32"
    if objective != "roberta":
        # The LM logits carry the padding mask; the records' weights already
        # zero the padding, so the mask must not reweight the loss again.
        x = DropMask(name="MLM-Logits-Unmasked")(transformer.model.output)
        inputs = transformer.model.inputs
        name = "lm_pretraining"
    else:
        layers = transformer.layers
        last = transformer.block_name(transformer.num_hidden_layers - 1)
        if not transformer.recompute:  # else the block's RecomputeBlock, not its plain copy
            last += "-FeedForward-Norm"
        positions = keras.Input(shape=(max_predictions,), dtype="int32",
                                name="Input-MLM-Positions")
        x = GatherPositions(name="MLM-Gather")([layers[last].output, positions])
        x = layers["MLM-Dense"](x)
        x = layers["MLM-Norm"](x)
        x = layers["Embedding-Token"](x, mode="dense")
        x = layers["MLM-Bias"](x)
        inputs = transformer.model.inputs + [positions]
        name = "mlm_pretraining"
    if mixed:
        x = keras.layers.Activation("linear", dtype="float32", name="MLM-Logits-Float32")(x)
    return keras.Model(inputs, x, name=name), transformer


def compile_pretraining_model(model, optimizer, jit_compile=True):
    """Compile ``model`` for training as ``pretraining.pretraining`` does.

    Loss: sparse categorical cross-entropy on the logits with
    ``reduction='sum_over_batch_size'``, i.e. ``sum(w * ce) / size(w)``, which
    is the mean over the labelled tokens once the weights are scaled to mean 1
    (:func:`pretraining.inputs.normalize_weights`); metric: the weighted
    token accuracy (``accuracy``).  Loss scaling is left to the optimizer
    (:func:`pretraining.optimization.make_optimizer` wraps it for
    ``mixed_float16``).

    Args:
        model: the training model of :func:`build_pretraining_model`.
        optimizer: a Keras optimizer.
        jit_compile: XLA-compile the train step (TensorFlow / JAX).
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                        reduction="sum_over_batch_size"),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
        auto_scale_loss=False,
    )
