"""Every layer class bert4keras registers with ``keras.saving`` serializes.

The classes come from Keras's own registry (every object registered under
the package ``bert4keras`` by a module of the library), not from a list kept
here, so a new layer is covered as soon as it is registered -- and fails
loudly until :data:`CASES` says how to build a small model with it. Per class:

* ``cls.from_config(layer.get_config())`` gives the same config;
* a small model using the layer (weights perturbed away from their initial
  values), saved as ``.keras``, reloads in a NEW process that runs only
  ``import bert4keras`` and ``keras.saving.load_model`` and reproduces the
  outputs (one subprocess for all classes).

Backend-neutral: the subprocess inherits ``KERAS_BACKEND``.
"""

import copy
import importlib
import json
import pkgutil
import sys

import keras
import numpy as np
import pytest

import bert4keras
from conftest import reload_in_new_process
from bert4keras import layers as L
from bert4keras.models import build_transformer_model

#: module name -> error, for the modules of bert4keras that failed to import
IMPORT_ERRORS = {}


def _import_all_modules():
    """Import every module of the package so that everything it registers
    anywhere is in the registry (not only what other tests imported)."""
    def failed(name):
        IMPORT_ERRORS[name] = repr(sys.exc_info()[1])

    for info in pkgutil.walk_packages(bert4keras.__path__, "bert4keras.", onerror=failed):
        try:
            importlib.import_module(info.name)
        except Exception as error:  # reported by test_registry_is_enumerated
            IMPORT_ERRORS[info.name] = repr(error)


def registered_layer_classes():
    """``{registered name: class}`` of the Layer classes (models included)
    that bert4keras's own modules register under the package ``bert4keras``."""
    _import_all_modules()
    return {name: obj for name, obj in keras.saving.get_custom_objects().items()
            if name.startswith("bert4keras>") and isinstance(obj, type)
            and issubclass(obj, keras.layers.Layer)
            and obj.__module__.split(".")[0] == "bert4keras"}


REGISTERED = registered_layer_classes()

# ---------------------------------------------------------------------------
# One small model per class: name -> builder() returning (layer, model, inputs)
# ---------------------------------------------------------------------------

CASES = {}


def case(*names):
    def decorate(builder):
        for name in names:
            CASES[name] = builder
        return builder
    return decorate


IDS = np.array([[5, 6, 7, 8, 2], [3, 4, 9, 0, 0]], "int32")
SEGMENTS = np.array([[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]], "int32")


def ids_input():
    return keras.Input((None,), dtype="int32", name="ids")


def hidden(ids, width=8):
    return keras.layers.Embedding(20, width, name="emb")(ids)


@case("Embedding")
def _embedding():
    ids = ids_input()
    layer = L.Embedding(20, 8, name="Embedding-Token")
    x = layer(ids)
    logits = layer(keras.layers.Dense(8)(x), mode="dense")  # tied output projection
    return layer, keras.Model(ids, [x, logits]), [IDS]


@case("PositionEmbedding")
def _position_embedding():
    ids = ids_input()
    layer = L.PositionEmbedding(8, 8, embeddings_initializer="glorot_uniform")
    return layer, keras.Model(ids, layer(hidden(ids))), [IDS]


@case("BiasAdd")
def _bias_add():
    ids = ids_input()
    layer = L.BiasAdd()
    return layer, keras.Model(ids, layer(hidden(ids))), [IDS]


@case("MaskedAdd")
def _masked_add():
    ids = ids_input()
    layer = L.MaskedAdd()
    masked = L.Embedding(20, 8, mask_zero=True, name="Embedding-Token")(ids)
    return layer, keras.Model(ids, layer([masked, hidden(ids)])), [IDS]


@case("DropMask")
def _drop_mask():
    ids = ids_input()
    layer = L.DropMask()
    masked = L.Embedding(20, 8, mask_zero=True, name="Embedding-Token")(ids)
    output = layer(masked)
    assert getattr(output, "_keras_mask", None) is None
    return layer, keras.Model(ids, output), [IDS]


@case("Dropout")
def _dropout():
    ids = ids_input()
    layer = L.Dropout(0.1, noise_shape=(None, 1, None), seed=3)
    return layer, keras.Model(ids, layer(hidden(ids))), [IDS]


@case("TokenSlice")
def _token_slice():
    ids = ids_input()
    layer = L.TokenSlice(index=1)
    return layer, keras.Model(ids, layer(hidden(ids))), [IDS]


@case("AttentionMask")
def _attention_mask():
    ids, segments = ids_input(), keras.Input((None,), dtype="int32", name="segments")
    layer = L.AttentionMask(mode="unilm")
    return layer, keras.Model([ids, segments], layer([ids, segments])), [IDS, SEGMENTS]


@case("MultiHeadAttention")
def _multi_head_attention():
    ids = ids_input()
    x = hidden(ids)
    bias = L.AttentionMask(mode="padding")(ids)
    layer = L.MultiHeadAttention(heads=2, head_size=4, out_dim=6, key_size=3)
    return layer, keras.Model(ids, layer([x, x, x, bias])), [IDS]


@case("LayerNormalization")
def _layer_normalization():
    ids, cond = ids_input(), keras.Input((3,), name="cond")
    layer = L.LayerNormalization(conditional=True, epsilon=1e-5)
    model = keras.Model([ids, cond], layer([hidden(ids), cond]))
    return layer, model, [IDS, np.random.RandomState(1).normal(size=(2, 3)).astype("float32")]


@case("FeedForward")
def _feed_forward():
    ids = ids_input()
    layer = L.FeedForward(12, activation=["gelu", "linear"])
    return layer, keras.Model(ids, layer(hidden(ids))), [IDS]


@case("Dense")
def _dense():
    ids = ids_input()
    layer = L.Dense(6, activation="gelu", name="MLM-Dense")
    return layer, keras.Model(ids, layer(hidden(ids))), [IDS]


@case("SinusoidalPositionEmbedding")
def _sinusoidal_position_embedding():
    ids = ids_input()
    layer = L.SinusoidalPositionEmbedding(8, merge_mode="mul")
    return layer, keras.Model(ids, layer(hidden(ids))), [IDS]


@case("RelativePositionEmbedding")
def _relative_position_embedding():
    ids = ids_input()
    x = hidden(ids)
    layer = L.RelativePositionEmbedding(input_dim=7, output_dim=4)
    return layer, keras.Model(ids, layer([x, x])), [IDS]


@case("RelativePositionEmbeddingT5")
def _relative_position_embedding_t5():
    ids = ids_input()
    x = hidden(ids)
    layer = L.RelativePositionEmbeddingT5(input_dim=8, output_dim=2, max_distance=16,
                                          bidirectional=False)
    return layer, keras.Model(ids, layer([x, x])), [IDS]


@case("CausalMask")
def _causal_mask():
    ids = ids_input()
    layer = L.CausalMask()
    return layer, keras.Model(ids, layer(ids)), [IDS]


@case("SequenceMasking", "ContextMask")
def _sequence_and_context_mask():
    ids = ids_input()
    masked = L.SequenceMasking(name="masking")([hidden(ids), ids])
    layer = L.ContextMask(name="context")
    model = keras.Model(ids, [masked, layer(masked)])
    return {"SequenceMasking": model.get_layer("masking"), "ContextMask": layer}, model, [IDS]


@case("ConditionalRandomField")
def _crf():
    ids = ids_input()
    layer = L.ConditionalRandomField(lr_multiplier=10)
    return layer, keras.Model(ids, layer([keras.layers.Dense(5)(hidden(ids)), ids])), [IDS]


@case("MaximumEntropyMarkovModel")
def _memm():
    ids = ids_input()
    layer = L.MaximumEntropyMarkovModel(lr_multiplier=2, hidden_dim=3)
    return layer, keras.Model(ids, layer([keras.layers.Dense(5)(hidden(ids)), ids])), [IDS]


@case("GlobalPointer", "EfficientGlobalPointer")
def _global_pointers():
    ids = ids_input()
    x = hidden(ids)
    gp = L.GlobalPointer(3, 4, name="gp")
    egp = L.EfficientGlobalPointer(2, 6, use_bias=False, name="egp")
    model = keras.Model(ids, [gp([x, ids]), egp(x)])
    # the registered loss and metric must come back in the new process too
    model.compile("adam", loss=L.global_pointer_crossentropy,
                  metrics=[[L.global_pointer_f1], [L.global_pointer_f1]])
    return {"GlobalPointer": gp, "EfficientGlobalPointer": egp}, model, [IDS]


@case("RecomputeBlock", "TransformerModel")
def _recompute():
    model = build_transformer_model(model="bert", vocab_size=20, hidden_size=8,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=12, max_position=16, recompute=True)
    blocks = [layer for layer in model.layers if type(layer).__name__ == "RecomputeBlock"]
    assert blocks, "recompute=True built no RecomputeBlock"
    return {"RecomputeBlock": blocks[0], "TransformerModel": model}, model, [IDS, SEGMENTS]


@case("ValidatedModel")
def _validated_model():
    model = build_transformer_model(model="bert", vocab_size=20, hidden_size=8,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=12, max_position=16)
    assert model.input_limits["Input-Token"] == {"ids": [20, "vocab_size"], "max_length": 16}
    return {"ValidatedModel": model}, model, [IDS, SEGMENTS]


@case("ScaleOffset", "ConditionalLayerNormalization")
def _scale_offset():
    ids, cond = ids_input(), keras.Input((3,), name="cond")
    scale = L.ScaleOffset(conditional=True, hidden_units=4, hidden_activation="swish",
                          name="affine")
    norm = L.ConditionalLayerNormalization(hidden_units=5, name="cond_norm")
    x = scale([hidden(ids), cond])
    model = keras.Model([ids, cond], [norm([x, cond]), L.ScaleOffset(offset=0.5)(x)])
    return ({"ScaleOffset": scale, "ConditionalLayerNormalization": norm}, model,
            [IDS, np.random.RandomState(2).normal(size=(2, 3)).astype("float32")])


@case("Concatenate1D", "ConcatSeq2Vec", "BatchSplit", "BatchConcat")
def _sequence_batch_layers():
    ids, vec = ids_input(), keras.Input((3,), name="vec")
    x = hidden(ids)
    concat = L.Concatenate1D(name="concat1d")
    seq2vec = L.ConcatSeq2Vec(name="seq2vec")
    split = L.BatchSplit([1, 1], name="split")
    join = L.BatchConcat(name="join")
    y = seq2vec([concat([x, x]), vec])
    model = keras.Model([ids, vec], join(split(y)))
    return ({"Concatenate1D": concat, "ConcatSeq2Vec": seq2vec, "BatchSplit": split,
             "BatchConcat": join}, model,
            [IDS, np.random.RandomState(3).normal(size=(2, 3)).astype("float32")])


@case("GlobalMaxPooling1D")
def _global_max_pooling():
    ids = ids_input()
    layer = L.GlobalMaxPooling1D()
    x = keras.layers.Embedding(20, 8, mask_zero=True, name="emb")(ids)
    return layer, keras.Model(ids, layer(x)), [IDS]


@case("GatedAttentionUnit")
def _gated_attention_unit():
    ids = ids_input()
    x = hidden(ids)
    bias = L.AttentionMask(mode="lm")(ids)
    table = L.SinusoidalPositionEmbedding(4, merge_mode="zero")(x)
    layer = L.GatedAttentionUnit(units=6, key_size=4, normalization="softmax_plus")
    return layer, keras.Model(ids, layer([x, bias, table], a_bias=True, p_bias="rotary")), [IDS]


@case("HierarchicalPositionEmbedding")
def _hierarchical_position_embedding():
    ids = ids_input()
    # a 4-row table read at 5 positions: the hierarchical part is used
    layer = L.HierarchicalPositionEmbedding(4, 8, hierarchical=0.3,
                                            embeddings_initializer="glorot_uniform")
    return layer, keras.Model(ids, layer(hidden(ids))), [IDS]


@case("ScoredMultiHeadAttention", "CachePaddedBias")
def _scored_attention_and_cache_bias():
    ids = ids_input()
    x = hidden(ids)
    bias = L.AttentionMask(mode="lm")(ids)
    attention = L.ScoredMultiHeadAttention(heads=2, head_size=4, name="scored")
    output, scores = attention([x, x, x, bias])
    padded = L.CachePaddedBias(name="cache_bias")([bias, x])
    model = keras.Model(ids, [output, scores, padded])
    return {"ScoredMultiHeadAttention": attention,
            "CachePaddedBias": model.get_layer("cache_bias")}, model, [IDS]


# ---------------------------------------------------------------------------
# Building the cases
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built():
    """``{builder: (layers by class name, model, inputs)}``, each built once."""
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    result = {}
    for builder in dict.fromkeys(CASES.values()):
        layer, model, inputs = builder()
        for weight in model.trainable_weights:  # away from the initial values
            value = keras.ops.convert_to_numpy(weight)
            weight.assign(value + rng.normal(0, 0.1, value.shape).astype(value.dtype))
        layers = layer if isinstance(layer, dict) else {type(layer).__name__: layer}
        result[builder] = (layers, model, inputs)
    return result


def _case_of(registered_name, built):
    name = registered_name.split(">", 1)[1]
    if name not in CASES:
        pytest.fail("%s (%s) is registered for serialization but has no entry in CASES of "
                    "tests/test_layer_serialization.py: add a small model using it"
                    % (registered_name, REGISTERED[registered_name].__module__))
    layers, model, inputs = built[CASES[name]]
    assert type(layers[name]) is REGISTERED[registered_name], registered_name
    return layers[name], model, inputs


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_registry_is_enumerated():
    assert not IMPORT_ERRORS, "modules of bert4keras that do not import: %s" % IMPORT_ERRORS
    # the enumeration itself: the layers every model uses are there
    for name in ("Embedding", "MultiHeadAttention", "LayerNormalization", "FeedForward"):
        assert "bert4keras>" + name in REGISTERED


def test_layer_classes_are_exported():
    """Every registered class of ``bert4keras.layers`` is in its ``__all__``
    and ``custom_objects``; every name of ``__all__`` exists."""
    missing = [name for name in L.__all__ if not hasattr(L, name)]
    assert not missing, "bert4keras.layers.__all__ names what it lacks: %s" % missing
    for registered, cls in REGISTERED.items():
        if cls.__module__.startswith("bert4keras.layers."):
            assert cls.__name__ in L.__all__, "%s missing from layers.__all__" % registered
            assert L.custom_objects.get(cls.__name__) is cls, registered


@pytest.mark.parametrize("registered_name", sorted(REGISTERED))
def test_get_config_round_trips(registered_name, built):
    layer, _, _ = _case_of(registered_name, built)
    config = layer.get_config()
    again = type(layer).from_config(copy.deepcopy(config))  # Keras's from_config may mutate
    assert type(again) is type(layer)
    assert again.get_config() == config


def test_keras_file_reloads_in_a_new_process(built, tmp_path):
    """All cases saved as ``.keras``; one subprocess that only runs
    ``import bert4keras`` and ``keras.saving.load_model`` reloads each and
    reproduces its outputs."""
    missing = sorted(n for n in REGISTERED if n.split(">", 1)[1] not in CASES)
    assert not missing, "registered classes without an entry in CASES: %s" % missing
    cases = [(sorted(layers), model, inputs) for layers, model, inputs in built.values()]
    report = reload_in_new_process(tmp_path, cases)
    for row, (names, _, _) in zip(report, cases):
        row["names"] = names
    failures = [row for row in report
                if "error" in row or not row["shapes"] or row["diff"] > 1e-5]
    assert not failures, json.dumps(failures, indent=1)
    covered = {name for row in report for name in row["names"]}
    assert covered >= {n.split(">", 1)[1] for n in REGISTERED}
    # compiled models (the GlobalPointer loss and metric) come back compiled
    assert [row["compiled"] for row in report] == [m.compiled for _, m, _ in cases], report
    assert any(m.compiled for _, m, _ in cases)
