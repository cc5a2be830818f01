"""bert4keras.graph_memory: functional models release intermediate tensors after
their last reader, with Keras' results.

The reference is Keras' own ``Function._run_through_graph`` (``restore()``),
run on the same model and inputs in the same process."""

import gc
import weakref

import keras
import numpy as np
import pytest
from keras import ops

import bert4keras  # noqa: F401  (applies graph_memory)
from bert4keras import graph_memory


class Box:
    """A plain holder (Keras would copy a dict or list assigned to a layer)."""

    def __init__(self):
        self.refs, self.alive = {}, {}


class Remember(keras.layers.Layer):
    """Identity-like layer (x * 1) that keeps a weak reference to its output."""

    def __init__(self, box, **kwargs):
        super().__init__(**kwargs)
        self.box = box

    def call(self, x):
        y = x * 1.0
        try:
            self.box.refs[self.name] = weakref.ref(y)
        except TypeError:  # a tensor type without weak references
            self.box.refs[self.name] = None
        return y


class Check(keras.layers.Layer):
    """Records, when called, which remembered outputs are still alive."""

    def __init__(self, box, **kwargs):
        super().__init__(**kwargs)
        self.box = box

    def call(self, x):
        gc.collect()
        self.box.alive.update({name: (ref is None or ref() is not None)
                               for name, ref in self.box.refs.items()})
        return x + 0.0


def toy_model():
    box = Box()
    a = keras.Input((6,), name="a")
    b = keras.Input((6,), name="b")
    first = Remember(box, name="first")(keras.layers.Dense(6, name="d1")(a))
    # one node reads it twice; a sum saves nothing for the backward, so on torch
    # autograd does not hold "first" either
    twice = keras.layers.Add(name="twice")([first, first])
    second = keras.layers.Dense(6, name="d2")(twice)
    shared = keras.layers.Dense(6, name="d3")(b)
    left = keras.layers.Multiply(name="left")([second, shared])
    right = keras.layers.Subtract(name="right")([shared, b])
    checked = Check(box, name="check")(left)
    return keras.Model([a, b], [checked, right, shared]), box


@pytest.fixture
def restore_after():
    yield
    graph_memory.apply()


def test_installed_by_import():
    assert graph_memory.applied()


def test_outputs_equal_keras_own(restore_after):
    model, _ = toy_model()
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((3, 6)).astype("float32") for _ in range(2)]
    ours = [ops.convert_to_numpy(t) for t in model(x)]
    graph_memory.restore()
    assert not graph_memory.applied()
    keras_own = [ops.convert_to_numpy(t) for t in model(x)]
    for got, want in zip(ours, keras_own):
        np.testing.assert_array_equal(got, want)


def test_nested_model_and_training_step_equal_keras_own(restore_after):
    """A model used as a layer of another, trained one step with SGD: the same
    weights afterwards with the release and with Keras' method."""
    def build():
        keras.utils.set_random_seed(1)
        inner, _ = toy_model()
        a, b = keras.Input((6,)), keras.Input((6,))
        checked, right, _ = inner([a, b])
        out = keras.layers.Dense(2, name="head")(keras.layers.Concatenate()([checked, right]))
        model = keras.Model([a, b], out)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    rng = np.random.default_rng(1)
    x = [rng.standard_normal((4, 6)).astype("float32") for _ in range(2)]
    y = rng.standard_normal((4, 2)).astype("float32")
    ours = build()
    ours.train_on_batch(x, y)
    graph_memory.restore()
    keras_own = build()
    keras_own.train_on_batch(x, y)
    for got, want in zip(ours.get_weights(), keras_own.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_intermediate_released_after_last_reader(restore_after):
    """In an eager call the first Dense block's output (read by one node) is
    gone by the time a later layer runs; with Keras' method it is still held."""
    model, box = toy_model()
    x = [np.ones((2, 6), "float32"), np.ones((2, 6), "float32")]
    model(x)
    if box.refs.get("first") is None:
        pytest.skip("this backend's eager tensors take no weak references")
    assert box.alive["first"] is False
    graph_memory.restore()
    model(x)
    assert box.alive["first"] is True


def test_unconnected_output_raises_keras_message():
    a = keras.Input((3,), name="a")
    b = keras.Input((3,), name="b")
    model = keras.Model([a, b], [keras.layers.Dense(2)(a), keras.layers.Dense(2)(b)])
    # drop the node that computes the second output: Keras' error, with its path
    depth = [d for d, nodes in model._nodes_by_depth.items()
             if any(n.operation is model.layers[-1] for n in nodes)][0]
    model._nodes_by_depth[depth] = [n for n in model._nodes_by_depth[depth]
                                    if n.operation is not model.layers[-1]]
    with pytest.raises(ValueError, match="not connected to `inputs`"):
        graph_memory.run_through_graph(model, [np.ones((1, 3), "float32")] * 2)
