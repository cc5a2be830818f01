"""bert4keras 0.11.5's optimizer names on Keras 3 (``bert4keras.optimizers.compat``).

References are independent of the code under test: NumPy formulas written
here, Keras' own optimizers where the rules coincide (Adafactor), and a plain
``Adam`` on a k-times larger batch for gradient accumulation. The tests
run on the current backend and, from the TensorFlow run, once more in
tests/test_backends.py's JAX process (Keras fixes the backend per process).
"""

import os
import re

import keras
import numpy as np
import pytest
from keras import ops

import bert4keras.optimizers as optimizers
from bert4keras.optimizers import (
    AdaFactor,
    Adam,
    Lion,
    extend_with_exponential_moving_average,
    extend_with_gradient_accumulation,
    extend_with_layer_adaptation,
    extend_with_lazy_optimization,
    extend_with_lookahead,
    extend_with_parameter_wise_lr,
    extend_with_piecewise_linear_lr,
    extend_with_weight_decay,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SMALL_BERT = os.path.join(ROOT, "checkpoints", "chinese_bert_small")

# Every public name of bert4keras 0.11.5's optimizers.py.
NAMES_0115 = [
    "Adam", "LionV2", "Lion", "AdaFactorBase", "AdaFactorV1", "AdaFactorV2", "AdaFactor",
    "export_to_custom_objects", "custom_objects", "piecewise_linear",
    "extend_with_weight_decay", "extend_with_weight_decay_v2",
    "extend_with_layer_adaptation", "extend_with_layer_adaptation_v2",
    "extend_with_piecewise_linear_lr", "extend_with_piecewise_linear_lr_v2",
    "extend_with_gradient_accumulation", "extend_with_gradient_accumulation_v2",
    "extend_with_lookahead", "extend_with_lookahead_v2",
    "extend_with_lazy_optimization", "extend_with_lazy_optimization_v2",
    "extend_with_exponential_moving_average", "extend_with_exponential_moving_average_v2",
    "extend_with_parameter_wise_lr", "extend_with_parameter_wise_lr_v2",
]


def numpy_weights(variables):
    return [np.array(ops.convert_to_numpy(v), copy=True) for v in variables]


def tiny_model(seed=0):
    """Dense -> LayerNorm ('Norm') -> Dense, weights drawn with NumPy."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, name="dense")(inputs)
    h = keras.layers.LayerNormalization(name="Norm")(h)
    outputs = keras.layers.Dense(2, name="out")(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def numpy_forward(weights, x):
    """The forward pass of :func:`tiny_model` in NumPy (LayerNorm epsilon 1e-3)."""
    k1, b1, gamma, beta, k2, b2 = weights
    h = x @ k1 + b1
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-3)
    return (h * gamma + beta) @ k2 + b2


def data(n, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)).astype("float32"),
            rng.normal(size=(n, 2)).astype("float32"))


def test_every_0115_name_is_importable():
    missing = [n for n in NAMES_0115 if not hasattr(optimizers, n)]
    assert not missing, missing
    for name in NAMES_0115:
        if name.endswith("_v2"):
            assert getattr(optimizers, name) is getattr(optimizers, name[:-3]), name
    assert optimizers.AdaFactorV1 is optimizers.AdaFactorV2 is AdaFactor
    assert optimizers.LionV2 is Lion
    assert set(optimizers.custom_objects) == {"Adam", "AdaFactor"}
    assert issubclass(Adam, keras.optimizers.Adam)
    assert issubclass(Lion, keras.optimizers.Lion)
    lion = Lion()
    assert float(ops.convert_to_numpy(lion.learning_rate)) == pytest.approx(3e-4)
    assert (lion.beta_1, lion.beta_2) == (0.95, 0.98)


# ---------------------------------------------------------------------------
# Adam
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_matches_numpy(bias_correction):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-6
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype("float32")
    grads = rng.normal(size=(5, 3, 4)).astype("float32")
    var = keras.Variable(w0)
    opt = Adam(learning_rate=lr, bias_correction=bias_correction)
    assert opt.epsilon == eps
    w, m, v = w0.astype("float64"), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        opt.apply([ops.convert_to_tensor(g)], [var])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g.astype("float64") ** 2
        step = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) if bias_correction else lr
        # Keras adds epsilon to the uncorrected sqrt(v) ("epsilon hat").
        w = w - step * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(ops.convert_to_numpy(var), w, rtol=1e-5, atol=1e-6)


def test_adam_embedding_gradient_summed_like_dense():
    """Repeated ids: the rows' gradients are summed before Adam squares them
    (0.11.5 made sparse gradients dense; TensorFlow gives IndexedSlices)."""
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-6
    ids = np.array([[1, 1, 3], [1, 0, 3]])
    table = np.random.default_rng(0).normal(size=(5, 2)).astype("float32")
    target = np.random.default_rng(1).normal(size=(2, 3, 2)).astype("float32")
    inputs = keras.Input((3,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Embedding(5, 2, name="emb")(inputs))
    model.set_weights([table])
    model.compile(optimizer=Adam(learning_rate=lr), loss="mse")
    model.train_on_batch(ids, target)
    out = table[ids]
    d_out = 2.0 * (out - target) / out.size
    grad = np.zeros_like(table, dtype="float64")
    np.add.at(grad, ids.reshape(-1), d_out.reshape(-1, 2))
    m, v = (1 - b1) * grad, (1 - b2) * grad ** 2
    want = table - lr * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(model.get_weights()[0], want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------

def test_ema_apply_then_reset():
    AdamEMA = extend_with_exponential_moving_average(Adam, name="AdamEMA")
    model = tiny_model()
    optimizer = AdamEMA(learning_rate=0.05, ema_momentum=0.8)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.8
    with pytest.raises(RuntimeError, match="not built"):
        optimizer.apply_ema_weights()
    model.compile(optimizer=optimizer, loss="mse")
    x, y = data(20)
    seen = []
    for step in range(5):
        model.train_on_batch(x[4 * step:4 * step + 4], y[4 * step:4 * step + 4])
        seen.append(numpy_weights(model.trainable_variables))
    # NumPy EMA as Keras defines it: the first update copies the weights.
    average = [w.astype("float64") for w in seen[0]]
    for weights in seen[1:]:
        average = [0.8 * a + 0.2 * w for a, w in zip(average, weights)]

    before = numpy_weights(model.trainable_variables)
    optimizer.apply_ema_weights()
    for got, want in zip(numpy_weights(model.trainable_variables), average):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for got, want in zip(numpy_weights(optimizer.ema_weights), average):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # evaluating now gives the averaged model's loss (NumPy forward pass)
    loss = model.evaluate(x, y, verbose=0)
    assert loss == pytest.approx(np.mean((numpy_forward(average, x) - y) ** 2), rel=1e-5)
    optimizer.reset_old_weights()
    after = numpy_weights(model.trainable_variables)
    assert all(np.array_equal(a, b) for a, b in zip(after, before))

    # fit leaves the trained weights in place (0.11.5), not the averages
    class Capture(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.weights = numpy_weights(self.model.trainable_variables)

    capture = Capture()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[capture])
    final = numpy_weights(model.trainable_variables)
    assert all(np.array_equal(a, b) for a, b in zip(final, capture.weights))
    assert not all(np.allclose(a, b) for a, b in zip(final, numpy_weights(optimizer.ema_weights)))


# ---------------------------------------------------------------------------
# Gradient accumulation
# ---------------------------------------------------------------------------

def test_gradient_accumulation_equals_k_times_batch():
    k, micro = 3, 2
    AdamAcc = extend_with_gradient_accumulation(Adam, name="AdamAcc")
    accumulating, reference = tiny_model(), tiny_model()
    opt = AdamAcc(learning_rate=0.01, grad_accum_steps=k)
    assert opt.grad_accum_steps == k and opt.gradient_accumulation_steps == k
    accumulating.compile(optimizer=opt, loss="mse")
    reference.compile(optimizer=Adam(learning_rate=0.01), loss="mse")
    x, y = data(2 * k * micro)
    for update in range(2):  # two updates: bias correction must count updates
        start = update * k * micro
        for j in range(k):
            s = slice(start + j * micro, start + (j + 1) * micro)
            accumulating.train_on_batch(x[s], y[s])
        s = slice(start, start + k * micro)
        reference.train_on_batch(x[s], y[s])
    for got, want in zip(numpy_weights(accumulating.trainable_variables),
                         numpy_weights(reference.trainable_variables)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_gradient_accumulation_arguments():
    AdamAcc = extend_with_gradient_accumulation(Adam, name="AdamAcc")
    assert AdamAcc().grad_accum_steps == 2  # 0.11.5 default
    assert AdamAcc(grad_accum_steps=1).gradient_accumulation_steps is None
    with pytest.raises(TypeError, match="grad_accum_steps"):
        AdamAcc(grad_accum_steps=2, gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match="grad_accum_steps"):
        AdamAcc(grad_accum_steps=0)
    # Tiger accumulates with its own memory-free rule
    TigerAcc = extend_with_gradient_accumulation(optimizers.Tiger)
    tiger = TigerAcc(grad_accum_steps=4)
    assert tiger.grad_accum_steps == 4 and not tiger.gradient_accumulation_steps


# ---------------------------------------------------------------------------
# Weight decay
# ---------------------------------------------------------------------------

def test_weight_decay_exclusions():
    lr, rate = 0.01, 0.1
    AdamW = extend_with_weight_decay(Adam, "AdamW")
    decayed, plain = tiny_model(), tiny_model()
    opt = AdamW(learning_rate=lr, weight_decay_rate=rate,
                exclude_from_weight_decay=["Norm", "bias"])
    assert opt.weight_decay_rate == rate
    decayed.compile(optimizer=opt, loss="mse")
    plain.compile(optimizer=Adam(learning_rate=lr), loss="mse")
    w0 = numpy_weights(decayed.trainable_variables)
    x, y = data(8)
    decayed.train_on_batch(x, y)
    plain.train_on_batch(x, y)
    paths = [v.path for v in decayed.trainable_variables]
    checked = set()
    for path, start, got, want in zip(paths, w0, numpy_weights(decayed.trainable_variables),
                                      numpy_weights(plain.trainable_variables)):
        excluded = re.search("Norm|bias", path) is not None
        expected = want if excluded else want - lr * rate * start
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=path)
        checked.add(excluded)
    assert checked == {True, False}
    with pytest.raises(TypeError, match="weight_decay_rate"):
        AdamW(weight_decay_rate=0.1, weight_decay=0.1)
    assert AdamW().weight_decay == 0.01  # 0.11.5 default


# ---------------------------------------------------------------------------
# Piecewise-linear learning rate
# ---------------------------------------------------------------------------

def test_piecewise_linear_lr_matches_numpy():
    SGDLR = extend_with_piecewise_linear_lr(keras.optimizers.SGD, name="SGDLR")
    opt = SGDLR(learning_rate=0.1, lr_schedule={"4": 1, 8: 0.5})  # JSON-style keys too
    assert opt.lr_schedule == {4: 1, 8: 0.5}
    var = keras.Variable(np.zeros(2, "float32"))
    w = np.zeros(2)
    for step in range(12):
        want = 0.1 * np.interp(step, [0, 4, 8], [0.0, 1.0, 0.5])
        assert float(ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(want, abs=1e-7)
        opt.apply([ops.ones(2)], [var])
        w -= want
    np.testing.assert_allclose(ops.convert_to_numpy(var), w, atol=1e-6)
    assert SGDLR(learning_rate=0.1).lr_schedule == {0: 1.0}


# ---------------------------------------------------------------------------
# AdaFactor
# ---------------------------------------------------------------------------

def test_adafactor_equals_keras_adafactor_where_rules_coincide():
    rng = np.random.default_rng(0)
    shapes = [(6, 5), (5,)]
    init = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(6)]
    ours = [keras.Variable(w) for w in init]
    theirs = [keras.Variable(w) for w in init]
    opt = AdaFactor(learning_rate=1e-2, min_dim_size_to_factor=1)
    ref = keras.optimizers.Adafactor(learning_rate=1e-2)
    for g in grads:
        opt.apply([ops.convert_to_tensor(x) for x in g], ours)
        ref.apply([ops.convert_to_tensor(x) for x in g], theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b),
                                   rtol=1e-5, atol=1e-6)
    # the factored weight keeps two small slots, no full-size one
    slot_shapes = sorted(tuple(v.shape) for v in opt.variables if len(v.shape) == 2)
    assert slot_shapes == [(1, 5), (6, 1)]


def test_adafactor_options_match_numpy():
    lr, beta1, beta2, eps1, eps2, d = 0.05, 0.9, 0.95, 1e-30, 1e-3, 1.0
    rng = np.random.default_rng(3)
    with keras.name_scope("Transformer-0"):
        kernel = keras.Variable(rng.normal(size=(4, 3)).astype("float32"), name="kernel")
    with keras.name_scope("Norm"):
        gamma = keras.Variable(rng.normal(size=(3,)).astype("float32"), name="gamma")
    opt = AdaFactor(learning_rate=lr, beta1=beta1, beta2=beta2,
                    exclude_from_parameter_scale=["Norm"])
    assert opt.factored_shape((4, 3)) is None  # both axes < 128
    assert opt.factored_shape((3, 200, 150)) == ((3, 1, 150), 1, (3, 200, 1), 2)
    ws = [ops.convert_to_numpy(kernel).astype("float64"),
          ops.convert_to_numpy(gamma).astype("float64")]
    ms, vs = [0.0, 0.0], [0.0, 0.0]
    rms = lambda x: np.sqrt(np.mean(np.square(x)))  # noqa: E731
    for _ in range(4):
        g = [rng.normal(size=(4, 3)), rng.normal(size=(3,))]
        opt.apply([ops.convert_to_tensor(x.astype("float32")) for x in g], [kernel, gamma])
        for i in range(2):
            vs[i] = beta2 * vs[i] + (1 - beta2) * (g[i] ** 2 + eps1)
            u = g[i] / np.sqrt(vs[i] + eps1)
            u = u / max(1.0, rms(u) / d)
            ms[i] = beta1 * ms[i] + (1 - beta1) * u
            u = ms[i] * (max(rms(ws[i]), eps2) if i == 0 else 1.0)
            ws[i] = ws[i] - lr * u
    np.testing.assert_allclose(ops.convert_to_numpy(kernel), ws[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(gamma), ws[1], rtol=1e-5, atol=1e-6)


def test_adafactor_relative_step():
    opt = AdaFactor(learning_rate=None)
    lr = opt.learning_rate  # step 0: min(1 / sqrt(1), 0.01)
    assert float(ops.convert_to_numpy(lr)) == pytest.approx(0.01)
    opt = AdaFactor(learning_rate=None, multiply_by_parameter_scale=False)
    assert float(ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(0.0005)


# ---------------------------------------------------------------------------
# 0.11.5 argument names of the modern factories; serialization
# ---------------------------------------------------------------------------

def test_old_argument_names_of_modern_factories():
    SGDP = extend_with_parameter_wise_lr(keras.optimizers.SGD)
    opt = SGDP(learning_rate=0.1, paramwise_lr_schedule={"dense/k": 2.0})
    assert opt.multipliers == {re.escape("dense/k"): 2.0}
    with pytest.raises(TypeError, match="paramwise_lr_schedule"):
        SGDP(multipliers={"a": 1.0}, paramwise_lr_schedule={"b": 2.0})
    lazy = extend_with_lazy_optimization(Adam)(include_in_lazy_optimization=["Embedding-Token"])
    assert lazy.lazy_variables == ["Embedding-Token"]
    la = extend_with_lookahead(Adam)(steps_per_slow_update=3, slow_step_size=0.25)
    assert (la.lookahead_steps, la.lookahead_alpha) == (3, 0.25)
    lamb = extend_with_layer_adaptation(Adam)(exclude_from_layer_adaptation=["Norm"])
    assert lamb.exclude_from_layer_adaptation == ["Norm"]


def test_parameter_wise_lr_substrings_scale_the_update():
    SGDP = extend_with_parameter_wise_lr(keras.optimizers.SGD, name="SGDParamwise")
    model = tiny_model()
    model.compile(optimizer=SGDP(learning_rate=0.1, paramwise_lr_schedule={"out/": 3.0}),
                  loss="mse")
    reference = tiny_model()
    reference.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    w0 = numpy_weights(model.trainable_variables)
    x, y = data(8)
    model.train_on_batch(x, y)
    reference.train_on_batch(x, y)
    for v, start, got, want in zip(model.trainable_variables, w0,
                                   numpy_weights(model.trainable_variables),
                                   numpy_weights(reference.trainable_variables)):
        scale = 3.0 if v.path.startswith("out/") else 1.0
        np.testing.assert_allclose(got, start + scale * (want - start), atol=1e-6)


def test_pretraining_stack_serializes(tmp_path):
    """The optimizer stack of 0.11.5's pretraining script, built and restored."""
    OPT = extend_with_weight_decay(Adam)
    OPT = extend_with_layer_adaptation(OPT)
    OPT = extend_with_piecewise_linear_lr(OPT)
    OPT = extend_with_gradient_accumulation(OPT)
    opt = OPT(learning_rate=1.76e-3, lr_schedule={100: 1.0, 1000: 0.0}, weight_decay_rate=0.01,
              exclude_from_weight_decay=["Norm", "bias"], bias_correction=False,
              grad_accum_steps=4)
    config = keras.optimizers.serialize(opt)
    again = keras.optimizers.deserialize(config)
    assert type(again) is OPT
    assert again.get_config() == opt.get_config()
    assert (again.grad_accum_steps, again.bias_correction) == (4, False)
    assert again.weight_decay_exclude == ["Norm", "bias"]
    model = tiny_model()
    model.compile(optimizer=opt, loss="mse")
    x, y = data(8)
    for _ in range(4):
        model.train_on_batch(x[:2], y[:2])
    assert all(np.all(np.isfinite(w)) for w in numpy_weights(model.trainable_variables))

    # a .keras file with AdaFactor (factored slots) loads back with its state
    model = tiny_model()
    model.compile(optimizer=AdaFactor(min_dim_size_to_factor=2, beta1=0.5), loss="mse")
    model.train_on_batch(x, y)
    path = os.path.join(str(tmp_path), "adafactor.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is AdaFactor and loaded.optimizer.beta1 == 0.5
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))

    EMA = extend_with_exponential_moving_average(Adam, name="AdamEMA")
    again = keras.optimizers.deserialize(keras.optimizers.serialize(EMA(ema_momentum=0.99)))
    assert type(again) is EMA and again.ema_momentum == 0.99


def test_export_to_custom_objects():
    def extend_with_nothing(BaseOptimizer):
        class NewOptimizer(BaseOptimizer):
            pass
        return NewOptimizer

    factory = optimizers.export_to_custom_objects(extend_with_nothing)
    cls = factory(keras.optimizers.SGD, name="SGDNothing")
    assert cls.__name__ == "SGDNothing"
    assert keras.saving.get_custom_objects()["SGDNothing"] is cls


# ---------------------------------------------------------------------------
# An old-style script (written for this test in bert4keras 0.11.5's idiom)
# ---------------------------------------------------------------------------

OLD_STYLE_SCRIPT = '''
import numpy as np
from bert4keras.backend import keras
from bert4keras.tokenizers import Tokenizer
from bert4keras.models import build_transformer_model
from bert4keras.optimizers import Adam
from bert4keras.optimizers import extend_with_exponential_moving_average
from bert4keras.optimizers import extend_with_piecewise_linear_lr
from bert4keras.snippets import sequence_padding, DataGenerator

maxlen = 12
batch_size = 8
config_path = MODEL_DIR + '/bert_config.json'
checkpoint_path = MODEL_DIR + '/bert_model.ckpt'
dict_path = MODEL_DIR + '/vocab.txt'

# toy task: does the sentence praise (好) or blame (差)?
rng = np.random.RandomState(0)
fillers = list('我们今天这个地方东西电影饭店手机')
def make_data(n):
    D = []
    for i in range(n):
        label = i % 2
        words = [fillers[j] for j in rng.randint(0, len(fillers), 5)]
        words.insert(rng.randint(0, 6), '好' if label else '差')
        D.append((''.join(words), label))
    return D
train_data, valid_data = make_data(48), make_data(16)

tokenizer = Tokenizer(dict_path, do_lower_case=True)

class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []

bert = build_transformer_model(config_path, checkpoint_path, return_keras_model=False)
output = keras.layers.Lambda(lambda x: x[:, 0], name='CLS-token')(bert.model.output)
output = keras.layers.Dense(2, activation='softmax')(output)
model = keras.models.Model(bert.model.input, output)

AdamEMA = extend_with_exponential_moving_average(Adam, name='AdamEMA')
AdamEMALR = extend_with_piecewise_linear_lr(AdamEMA, name='AdamEMALR')
optimizer = AdamEMALR(learning_rate=5e-4, lr_schedule={6: 1, 30: 0.2}, ema_momentum=0.8)
model.compile(loss='sparse_categorical_crossentropy', optimizer=optimizer,
              metrics=['accuracy'])

train_generator = data_generator(train_data, batch_size)
valid_generator = data_generator(valid_data, batch_size)

def evaluate(data):
    total, right = 0., 0.
    for x_true, y_true in data:
        y_pred = model.predict(x_true, verbose=0).argmax(axis=1)
        y_true = y_true[:, 0]
        total += len(y_true)
        right += (y_true == y_pred).sum()
    return right / total

class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        super(Evaluator, self).__init__()
        self.best_val_acc = 0.
        self.restored = []
    def on_epoch_end(self, epoch, logs=None):
        trained = [w.copy() for w in model.get_weights()]
        optimizer.apply_ema_weights()
        val_acc = evaluate(valid_generator)
        if val_acc >= self.best_val_acc:
            self.best_val_acc = val_acc
            model.save_weights(WEIGHTS_PATH)
        optimizer.reset_old_weights()
        self.restored.append(all(
            np.array_equal(a, b) for a, b in zip(trained, model.get_weights())))

if __name__ == '__main__':
    evaluator = Evaluator()
    model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator),
              epochs=4, callbacks=[evaluator])
    model.load_weights(WEIGHTS_PATH)
    final_acc = evaluate(valid_generator)
'''


@pytest.mark.skipif(not os.path.isdir(SMALL_BERT), reason="shipped small BERT not present")
def test_old_style_script_trains_and_evaluates(tmp_path):
    scope = {"__name__": "__main__", "MODEL_DIR": SMALL_BERT,
             "WEIGHTS_PATH": str(tmp_path / "best_model.weights.h5")}
    keras.utils.set_random_seed(0)
    exec(compile(OLD_STYLE_SCRIPT, "old_style_script.py", "exec"), scope)
    evaluator = scope["evaluator"]
    assert evaluator.restored == [True] * 4
    assert evaluator.best_val_acc >= 0.9, evaluator.best_val_acc
    assert scope["final_acc"] == evaluator.best_val_acc
    optimizer = scope["optimizer"]
    # the scheduled rate at the restored step (save_weights stores the optimizer too)
    step = int(ops.convert_to_numpy(optimizer.iterations))
    assert step in (6, 12, 18, 24)
    want = 5e-4 * np.interp(step, [0, 6, 30], [0.0, 1.0, 0.2])
    assert float(ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(want, rel=1e-5)
