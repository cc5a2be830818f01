"""Recompute (gradient checkpointing) per Transformer block.

``build_transformer_model(..., recompute=True)`` wraps each block in a
``RecomputeBlock`` that runs the block's own layers under ``keras.remat``.
Checked here: the outputs and the gradients of a compiled training step equal
those of the same model without recompute (within 1e-5, with dropout on, so
the dropout masks must be reproduced too) on TensorFlow, and on JAX and
PyTorch (:func:`test_gradients_match_on_this_backend`, run in
tests/test_backends.py's process of each); recompute is really active
(TensorFlow traces each block's forward a second time for the gradient,
PyTorch runs it once more per step than the same wrapper without
``keras.remat``, JAX's gradient jaxpr holds a ``remat`` region per block);
layer names, checkpoint loading,
``.keras`` files, the ``RECOMPUTE`` environment variable and the pretraining
script's ``--recompute``.
"""

import json
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position=32)
#: model key -> extra constructor arguments
FAMILIES = {
    "bert": dict(with_pool=True),
    "albert": dict(embedding_size=16, with_mlm="linear"),
    "albert_unshared": {},
    "nezha": {},
    "electra": dict(with_discriminator="linear"),
    "roformer": dict(with_mlm="linear"),
    "roformer_v2": {},
    "gpt": dict(with_lm="linear"),
    "gpt2": dict(with_lm="linear"),
    "gpt2_ml": dict(with_lm="linear"),
    "t5.1.1": dict(segment_vocab_size=0, with_lm="linear"),
    "t5_encoder": dict(segment_vocab_size=0),
    "t5.1.1_decoder": dict(segment_vocab_size=0, with_lm="linear"),
}


def build(name, recompute, dropout=0.0, **kwargs):
    """The tiny model ``name`` with fixed initial weights (and dropout seeds)."""
    import keras

    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(0)
    args = dict(TINY, dropout_rate=dropout, attention_dropout_rate=dropout)
    args.update(FAMILIES.get(name, {}), **kwargs)
    return build_transformer_model(model=name, recompute=recompute, **args)


def inputs_for(model, seed=0):
    """A batch for ``model``'s inputs: ids with padding in row 1, segment ids,
    and for T5's decoder a random context with two padding rows zeroed."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, TINY["vocab_size"], (3, 8)).astype("int32")
    ids[1, 6:] = 0
    batch = []
    for tensor in model.inputs:
        if tensor.name == "Input-Context":
            context = rng.standard_normal((3, 5, TINY["hidden_size"])).astype("float32")
            context[1, 3:] = 0
            batch.append(context)
        elif tensor.name == "Input-Segment":
            batch.append((np.arange(8)[None] >= 4).astype("int32").repeat(3, 0))
        else:
            batch.append(ids)
    return batch


def train_step_gradients(model, x, jit=False, steps=1, counter=None):
    """``{variable path: gradient}`` of one compiled ``fit`` step (SGD, lr 1,
    loss: mean squared output against a fixed random target); with
    ``steps > 1`` the summed updates. ``counter`` (of :func:`count_forwards`)
    is reset just before ``fit``."""
    import keras
    from keras import ops

    outputs = model(x, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    rng = np.random.RandomState(1)
    y = [rng.standard_normal(tuple(o.shape)).astype("float32") for o in outputs]
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=["mse"] * len(y),
                  jit_compile=jit)
    before = {v.path: ops.convert_to_numpy(v) for v in model.trainable_variables}
    if counter is not None:
        counter["runs"] = 0
    model.fit(x, y if len(y) > 1 else y[0], batch_size=len(x[0]), epochs=steps, verbose=0,
              shuffle=False)
    return {v.path: before[v.path] - ops.convert_to_numpy(v) for v in model.trainable_variables}


def count_forwards(monkeypatch_or_none=None):
    """Patch ``RecomputeBlock._forward`` to count its runs; returns the counter."""
    from bert4keras.models.recompute import RecomputeBlock

    counter = {"runs": 0}
    original = RecomputeBlock._forward

    def counted(self, *args, **kwargs):
        counter["runs"] += 1
        return original(self, *args, **kwargs)

    if monkeypatch_or_none is None:
        RecomputeBlock._forward = counted
    else:
        monkeypatch_or_none.setattr(RecomputeBlock, "_forward", counted)
    return counter


def block_calls(model):
    """How many RecomputeBlock calls the model's graph holds (ALBERT: one
    shared block called once per layer; T5: encoder and decoder blocks)."""
    from bert4keras.models.recompute import RecomputeBlock

    return sum(isinstance(node.operation, RecomputeBlock)
               for nodes in model._nodes_by_depth.values() for node in nodes)


def assert_same_gradients(plain, recomputed, atol=1e-5):
    assert sorted(plain) == sorted(recomputed)
    largest = max(float(np.abs(g).max()) for g in plain.values())
    assert largest > 1e-4  # the step really trained something
    for path in plain:
        np.testing.assert_allclose(recomputed[path], plain[path], rtol=0, atol=atol,
                                   err_msg=path)


# ---------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_wraps_each_block_and_keeps_its_outputs(name):
    from keras import ops

    from bert4keras.models.recompute import RecomputeBlock

    plain, recomputed = build(name, False), build(name, True)
    x = inputs_for(plain)
    wrappers = [layer for layer in recomputed.layers if isinstance(layer, RecomputeBlock)]
    blocks = 2 * TINY["num_hidden_layers"] if name == "t5.1.1" else TINY["num_hidden_layers"]
    assert block_calls(recomputed) == blocks
    assert len(wrappers) == (1 if name == "albert" else blocks)
    assert not any(isinstance(layer, RecomputeBlock) for layer in plain.layers)
    a, b = plain(x), recomputed(x)
    for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
        np.testing.assert_allclose(ops.convert_to_numpy(v), ops.convert_to_numpy(u), atol=1e-6)
    # the layer names still resolve, to the same weights
    for layer in plain.layers:
        if "Transformer" in layer.name and layer.weights:
            inner = recomputed.get_layer(layer.name)
            assert [w.path for w in inner.weights] == [w.path for w in layer.weights]
    assert {v.path for v in plain.weights} == {v.path for v in recomputed.weights}
    with pytest.raises(ValueError, match="No such layer"):
        recomputed.get_layer("Transformer-99-FeedForward")


def test_block_sublayer_output_still_usable():
    """``get_layer(...).output`` of a layer inside a block is a plain copy of
    that block in the same graph: a model built on it gives the same values."""
    import keras
    from keras import ops

    model = build("bert", True, with_pool=False)
    x = inputs_for(model)
    last = model.get_layer("Transformer-1-FeedForward-Norm")
    tap = keras.Model(model.inputs, last.output)
    np.testing.assert_allclose(ops.convert_to_numpy(tap(x)), ops.convert_to_numpy(model(x)),
                               atol=1e-6)
    assert model.get_layer("Transformer-1").output is model.output


# ---------------------------------------------------------------------------
# Gradients on TensorFlow
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, jit", [("bert", True), ("albert", False), ("gpt2", False),
                                       ("t5.1.1", False)])
def test_training_step_gradients_match_without_recompute(name, jit, monkeypatch):
    """``jit``: both steps XLA-compiled (XLA draws other dropout masks than the
    TensorFlow kernels, so the reference must be compiled alike)."""
    plain = build(name, False, dropout=0.1)
    expected = train_step_gradients(plain, inputs_for(plain), jit=jit)
    model = build(name, True, dropout=0.1)
    counter = count_forwards(monkeypatch)
    got = train_step_gradients(model, inputs_for(model), jit=jit, counter=counter)
    assert_same_gradients(expected, got)
    # the traced training step ran each block twice: forward, and again for the gradient
    assert counter["runs"] == 2 * block_calls(model)


def test_dropout_masks_follow_the_plain_model_over_steps():
    """Two steps with dropout: the seed states advance as without recompute."""
    plain = build("bert", False, dropout=0.3)
    expected = train_step_gradients(plain, inputs_for(plain), steps=2)
    model = build("bert", True, dropout=0.3)
    got = train_step_gradients(model, inputs_for(model), steps=2)
    assert_same_gradients(expected, got)
    seeds = [np.asarray(v) for v in plain.non_trainable_variables]
    assert seeds and all(np.array_equal(a, np.asarray(b))
                         for a, b in zip(seeds, model.non_trainable_variables))


# ---------------------------------------------------------------------------
# Checkpoints, .keras files, the environment variable, pretraining
# ---------------------------------------------------------------------------


def test_checkpoint_and_keras_file_round_trip(google_bert, tmp_path):
    import keras
    from keras import ops

    from bert4keras.models import build_transformer_model
    from bert4keras.models.recompute import RecomputeBlock, TransformerModel

    config = os.path.join(google_bert, "bert_config.json")
    checkpoint = os.path.join(google_bert, "bert_model.ckpt")
    plain = build_transformer_model(config, checkpoint, with_mlm=True)
    transformer = build_transformer_model(config, checkpoint, with_mlm=True, recompute=True,
                                          return_keras_model=False)
    model = transformer.model
    assert isinstance(model, TransformerModel)
    ids = np.array([[2, 5, 9, 14, 3, 0, 0]], "int32")
    x = [ids, np.zeros_like(ids)]
    np.testing.assert_allclose(ops.convert_to_numpy(model(x)), ops.convert_to_numpy(plain(x)),
                               atol=1e-6)
    # written back under the same Google names
    prefix = str(tmp_path / "again.ckpt")
    transformer.save_weights_as_checkpoint(prefix)
    again = build_transformer_model(config, prefix, with_mlm=True)
    np.testing.assert_allclose(ops.convert_to_numpy(again(x)), ops.convert_to_numpy(plain(x)),
                               atol=1e-6)
    # a .keras file reloads with plain keras.saving.load_model, still recomputing
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, TransformerModel)
    assert sum(isinstance(layer, RecomputeBlock) for layer in loaded.layers) == 2
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(plain(x)),
                               atol=1e-6)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded.get_layer("Transformer-0-FeedForward").weights[0]),
        ops.convert_to_numpy(plain.get_layer("Transformer-0-FeedForward").weights[0]))


def test_recompute_environment_variable(monkeypatch):
    from bert4keras.models.recompute import RecomputeBlock, recompute_from_env

    def wrapped(model):
        return sum(isinstance(layer, RecomputeBlock) for layer in model.layers)

    monkeypatch.setenv("RECOMPUTE", "1")
    assert wrapped(build("gpt2", None)) == 2
    assert wrapped(build("gpt2", False)) == 0  # the argument wins
    monkeypatch.setenv("RECOMPUTE", "0")
    assert wrapped(build("gpt2", None)) == 0
    monkeypatch.setenv("RECOMPUTE", "sometimes")
    with pytest.raises(ValueError, match="RECOMPUTE='sometimes'"):
        build("gpt2", None)
    assert recompute_from_env({}) is False


def test_pretraining_recompute_flag(tmp_path):
    from bert4keras.models.recompute import RecomputeBlock
    from pretraining.pretraining import (
        build_pretraining_model,
        parse_args,
        recompute_layer_names,
    )

    config = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=32, type_vocab_size=2,
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    path = str(tmp_path / "bert_config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    common = ["--config", path, "--vocab", "v", "--records", "r", "--out-dir", "o"]
    assert parse_args(common).recompute is None  # follows RECOMPUTE
    assert parse_args(common + ["--recompute"]).recompute is True
    rng = np.random.RandomState(0)
    x = {"Input-Token": rng.randint(5, 60, (2, 12)).astype("int32"),
         "Input-Segment": np.zeros((2, 12), "int32"),
         "Input-MLM-Positions": np.array([[1, 4, 7], [2, 3, 9]], "int32")}
    y = rng.randint(5, 60, (2, 3)).astype("int32")
    results = []
    for recompute in (False, True):
        import keras

        keras.utils.set_random_seed(0)
        model, transformer = build_pretraining_model(path, "roberta", 3, recompute=recompute)
        wrappers = [layer.name for layer in model.layers if isinstance(layer, RecomputeBlock)]
        assert wrappers == (recompute_layer_names(2) if recompute else [])
        model.compile(optimizer=keras.optimizers.SGD(1.0),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = {v.path: np.asarray(v) for v in model.trainable_variables}
        model.train_on_batch(x, y)
        results.append({v.path: before[v.path] - np.asarray(v)
                        for v in model.trainable_variables})
    assert_same_gradients(*results)


# ---------------------------------------------------------------------------
# JAX and PyTorch (one Keras backend per process)
# ---------------------------------------------------------------------------


def test_gradients_match_on_this_backend():
    """Gradient equality and evidence of rematerialisation on JAX and PyTorch
    (tests/test_backends.py runs this file's test there; on TensorFlow the
    tests above check it)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        pytest.skip("TensorFlow: the tests above; this one runs in test_backends' JAX and "
                    "PyTorch processes")
    counter = count_forwards()
    cases = [("bert", 0.1)] + ([("t5.1.1", 0.0)] if backend == "torch" else [])
    for name, dropout in cases:
        plain = build(name, False, dropout=dropout)
        expected = train_step_gradients(plain, inputs_for(plain), jit=backend == "jax")
        model = build(name, True, dropout=dropout)
        got = train_step_gradients(model, inputs_for(model), jit=backend == "jax",
                                   counter=counter)
        assert_same_gradients(expected, got)
        print("%s %s: gradients equal (%d block forwards)" % (backend, name, counter["runs"]))
    if backend == "torch":  # eager: a recomputed block runs once more, during backward
        remat = keras.remat
        try:
            keras.remat = lambda f: f  # the same wrapper without rematerialisation
            model = build("bert", True)
            train_step_gradients(model, inputs_for(model), counter=counter)
            without = counter["runs"]
        finally:
            keras.remat = remat
        model = build("bert", True)
        train_step_gradients(model, inputs_for(model), counter=counter)
        assert counter["runs"] == without + block_calls(model), (counter, without)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        model = build("bert", True)
        x = inputs_for(model)
        trainable = [v.value for v in model.trainable_variables]
        other = [v.value for v in model.non_trainable_variables]

        def loss(values):
            y, _ = model.stateless_call(values, other, x, training=True)
            return jnp.sum(jnp.square(y))

        text = str(jax.make_jaxpr(jax.grad(loss))(trainable))
        # one rematerialised region per block in the gradient's jaxpr
        assert text.count("remat") + text.count("checkpoint[") >= block_calls(model), text[:2000]
