"""A model compiled with an optimizer class made by an ``extend_with_*`` factory
saves to ``.keras`` and loads in a new process after ``import bert4keras`` alone.

For every factory (the ``_v2`` aliases included, and stacks), the parent
process trains a tiny model one step, saves it, then takes one more step. One
subprocess, which imports nothing but ``bert4keras`` and Keras, loads every
file and takes the same step. The class name, the serialized optimizer, the
optimizer variables (slots, accumulators, averages, iterations) and the
weights after the extra step must equal the parent's exactly. bert4keras'
own ``AdamW`` (a fixed, registered class) goes through the same round trip.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import bert4keras  # noqa: F401
from bert4keras.optimizers import (
    Adam,
    AdamW,
    Tiger,
    extend_with_exponential_moving_average,
    extend_with_gradient_accumulation,
    extend_with_gradient_accumulation_v2,
    extend_with_layer_adaptation,
    extend_with_lazy_optimization,
    extend_with_lookahead,
    extend_with_lookahead_v2,
    extend_with_parameter_wise_lr,
    extend_with_parameter_wise_lr_v2,
    extend_with_piecewise_linear_lr,
    extend_with_weight_decay,
    layerwise_lr_decay,
)
from bert4keras.optimizers.base import ExtendedOptimizer, optimizer_class_from_recipe
from bert4keras.snippets import build_for_fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pretraining_stack():
    """bert4keras 0.11.5's pretraining optimizer (LAMB variant, gradient accumulation)."""
    AdamW = extend_with_weight_decay(Adam, "AdamW")
    LAMB = extend_with_layer_adaptation(AdamW, "LAMB")
    LAMBLR = extend_with_piecewise_linear_lr(LAMB, "LAMBLR")
    LAMBLRG = extend_with_gradient_accumulation(LAMBLR, "LAMBLRG")
    return LAMBLRG(learning_rate=1e-2, weight_decay_rate=0.01, bias_correction=False,
                   exclude_from_weight_decay=["Norm", "bias"], lr_schedule={1: 1.0, 10: 0.1},
                   grad_accum_steps=2)


CASES = {
    "weight_decay": lambda: extend_with_weight_decay(Adam)(
        learning_rate=1e-2, weight_decay_rate=0.1, exclude_from_weight_decay=["bias"]),
    # the helper of examples/task_sequence_labeling_ner_crf.py (adamw_egp)
    "parameter_wise_lr": lambda: extend_with_parameter_wise_lr(keras.optimizers.AdamW)(
        learning_rate=1e-2, weight_decay=0.01, multipliers={"Classifier": 2.0},
        weight_decay_exclude=["Norm", "bias"]),
    "layerwise_lr_decay_v2": lambda: extend_with_parameter_wise_lr_v2(keras.optimizers.SGD)(
        learning_rate=0.1, momentum=0.9, multipliers=layerwise_lr_decay(1, 0.5)),
    "ema": lambda: extend_with_exponential_moving_average(Adam, name="AdamEMA")(
        learning_rate=1e-2, ema_momentum=0.9),
    "gradient_accumulation": lambda: extend_with_gradient_accumulation(keras.optimizers.Adam)(
        learning_rate=1e-2, grad_accum_steps=2),
    "tiger_gradient_accumulation_v2": lambda: extend_with_gradient_accumulation_v2(Tiger)(
        learning_rate=1e-2, grad_accum_steps=2),
    "piecewise_linear_lr": lambda: extend_with_piecewise_linear_lr(keras.optimizers.Adam)(
        learning_rate=1e-2, lr_schedule={2: 1.0, 10: 0.1}),
    "lookahead_v2": lambda: extend_with_lookahead_v2(keras.optimizers.Adam)(
        learning_rate=1e-2, steps_per_slow_update=2, slow_step_size=0.5),
    "lazy": lambda: extend_with_lazy_optimization(keras.optimizers.Adam)(learning_rate=1e-2),
    "layer_adaptation": lambda: extend_with_layer_adaptation(keras.optimizers.AdamW)(
        learning_rate=1e-2, weight_decay=0.01),
    # a stack of two; "AdamW" is also the name of a Keras optimizer
    "weight_decay_ema": lambda: extend_with_exponential_moving_average(
        extend_with_weight_decay(Adam, "AdamW"), "AdamWEMA")(
        learning_rate=1e-2, weight_decay_rate=0.01, ema_momentum=0.9),
    "lookahead_parameter_wise_lr": lambda: extend_with_lookahead(
        extend_with_parameter_wise_lr(keras.optimizers.AdamW))(
        learning_rate=1e-2, multipliers={"Embedding-": 0.5}, lookahead_steps=2),
    "pretraining_0_11_5": _pretraining_stack,
    # not generated: bert4keras' own AdamW (fused update on torch), registered by name
    "bert4keras_adamw": lambda: AdamW(learning_rate=1e-2, weight_decay=0.02, epsilon=1e-6),
}
#: registered names of the cases that are fixed classes (the others: generated)
FIXED_NAMES = {"bert4keras_adamw": "bert4keras>AdamW"}


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="Embedding-Token")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(8, activation="tanh", name="Transformer-0-FeedForward")(x)
    x = keras.layers.LayerNormalization(name="Transformer-0-FeedForward-Norm")(x)
    outputs = keras.layers.Dense(2, name="Classifier")(x)
    return keras.Model(inputs, outputs)


def _batches():
    rng = np.random.RandomState(0)
    # ids below 12 of 20: some embedding rows get no gradient (lazy updates)
    ids = rng.randint(1, 12, size=(2, 4, 6)).astype("int32")
    labels = rng.randint(0, 2, size=(2, 4)).astype("int32")
    return ids, labels


def _numpy(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _described(optimizer):
    """What must survive the round trip: class name, serialized form, variable paths."""
    serialized = keras.saving.serialize_keras_object(optimizer)
    return {"class_name": type(optimizer).__name__,
            "serialized": json.loads(json.dumps(serialized)),
            "variables": [v.path for v in optimizer.variables]}


CHILD = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import keras
    import bert4keras

    root = sys.argv[1]
    ids, labels = np.load(os.path.join(root, "data.npz")).values()
    for case in json.load(open(os.path.join(root, "cases.json"))):
        model = keras.saving.load_model(os.path.join(root, case + ".keras"))
        optimizer = model.optimizer
        serialized = keras.saving.serialize_keras_object(optimizer)
        described = {"class_name": type(optimizer).__name__,
                     "serialized": json.loads(json.dumps(serialized)),
                     "variables": [v.path for v in optimizer.variables]}
        json.dump(described, open(os.path.join(root, case + ".child.json"), "w"))
        state = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]
        model.train_on_batch(ids[1], labels[1])
        weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
        np.savez(os.path.join(root, case + ".child.npz"), *(state + weights))
    print("done")
""")


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Parent: train, save, train again. Child: load each file, train once."""
    root = str(tmp_path_factory.mktemp("optimizer_round_trip"))
    ids, labels = _batches()
    np.savez(os.path.join(root, "data.npz"), ids, labels)
    parent = {}
    for case, make in CASES.items():
        model = _model()
        model.compile(optimizer=make(), jit_compile=False,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        # the slots built before the first trace, as in the child's load_model (one trace,
        # not two; built inside the trace, as fit does it, in test_compat_optimizers)
        build_for_fit(model, (ids[0], labels[0]))
        model.train_on_batch(ids[0], labels[0])
        model.save(os.path.join(root, case + ".keras"))
        described = _described(model.optimizer)
        state = _numpy(model.optimizer.variables)
        model.train_on_batch(ids[1], labels[1])
        parent[case] = (described, state, _numpy(model.weights))
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump(list(CASES), f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", CHILD, root], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-4000:]
    child = {}
    for case in CASES:
        with open(os.path.join(root, case + ".child.json")) as f:
            described = json.load(f)
        arrays = np.load(os.path.join(root, case + ".child.npz"))
        arrays = [arrays["arr_%d" % i] for i in range(len(arrays.files))]
        count = len(parent[case][1])
        child[case] = (described, arrays[:count], arrays[count:])
    return parent, child


@pytest.mark.parametrize("case", list(CASES))
def test_generated_optimizer_reloads_in_new_process(round_trip, case):
    parent, child = round_trip
    (want, want_state, want_weights), (got, got_state, got_weights) = parent[case], child[case]
    assert got["class_name"] == want["class_name"]
    assert want["serialized"]["registered_name"] == FIXED_NAMES.get(
        case, "bert4keras>ExtendedOptimizer")
    assert got["serialized"] == want["serialized"]
    assert got["variables"] == want["variables"]
    assert len(got_state) == len(want_state)
    for path, a, b in zip(want["variables"], got_state, want_state):
        np.testing.assert_array_equal(a, b, err_msg=path)
    iterations = [a for path, a in zip(want["variables"], got_state) if "iteration" in path]
    assert [int(a) for a in iterations] == [1]  # one step before saving
    assert len(got_weights) == len(want_weights)
    for a, b in zip(got_weights, want_weights):
        np.testing.assert_array_equal(a, b)


def test_recipe_names_base_and_extensions_in_order():
    optimizer = CASES["pretraining_0_11_5"]()
    recipe = optimizer.get_config()["extended_optimizer"]
    assert recipe == {
        "base": "bert4keras>Adam",
        "base_module": "bert4keras.optimizers",
        "extensions": [{"extension": "WeightDecay", "class_name": "AdamW"},
                       {"extension": "LayerAdaptation", "class_name": "LAMB"},
                       {"extension": "PiecewiseLinearLR", "class_name": "LAMBLR"},
                       {"extension": "GradientAccumulation", "class_name": "LAMBLRG"}]}
    # in the process that made it, the recipe gives back the same class
    assert optimizer_class_from_recipe(recipe) is type(optimizer)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again) is type(optimizer) and again.get_config() == optimizer.get_config()


def test_registered_names_of_fixed_classes_unchanged():
    from bert4keras.optimizers import AdaFactor, Lion, PiecewiseLinear

    for cls in (Tiger, Adam, AdamW, Lion, AdaFactor, PiecewiseLinear):
        assert keras.saving.get_registered_name(cls) == "bert4keras>" + cls.__name__
        assert keras.saving.get_registered_object("bert4keras>" + cls.__name__) is cls
    assert keras.saving.get_registered_object("bert4keras>ExtendedOptimizer") is ExtendedOptimizer


def test_config_saved_under_the_old_name_loads_after_the_factory_runs():
    cls = extend_with_parameter_wise_lr(keras.optimizers.AdamW)
    serialized = keras.saving.serialize_keras_object(cls(multipliers={"Embedding-": 0.5}))
    # the form files saved before the recipe existed have
    serialized["registered_name"] = "bert4keras>AdamWParameterWiseLR"
    del serialized["config"]["extended_optimizer"]
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is cls and again.multipliers == {"Embedding-": 0.5}


def test_a_generated_name_never_replaces_a_registered_class():
    extend_with_weight_decay(keras.optimizers.Adam, name="Adam")
    extend_with_weight_decay(keras.optimizers.Adam, name="ExtendedOptimizer")
    assert keras.saving.get_registered_object("bert4keras>Adam") is Adam
    assert keras.saving.get_registered_object("bert4keras>ExtendedOptimizer") is ExtendedOptimizer


def test_bad_recipes_are_named():
    config = extend_with_lookahead(keras.optimizers.Adam)().get_config()
    serialized = {"module": "bert4keras.optimizers", "class_name": "AdamLookahead",
                  "registered_name": "bert4keras>ExtendedOptimizer", "config": config}
    bad = json.loads(json.dumps(serialized))
    bad["config"]["extended_optimizer"]["extensions"][0]["extension"] = "Nope"
    with pytest.raises(ValueError, match="unknown extension 'Nope'"):
        keras.saving.deserialize_keras_object(bad)
    bad = json.loads(json.dumps(serialized))
    bad["config"]["extended_optimizer"].update(base="MyOptimizer", base_module="__main__")
    with pytest.raises(TypeError, match="'MyOptimizer'.*register_keras_serializable"):
        keras.saving.deserialize_keras_object(bad)
    bad = json.loads(json.dumps(serialized))
    del bad["config"]["extended_optimizer"]
    with pytest.raises(ValueError, match="needs a recipe"):
        keras.saving.deserialize_keras_object(bad)
