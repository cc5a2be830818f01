"""Tiger as its author specifies it (issue 16, "Seed fidelity").

Sources: Su Jianlin, "Tiger: a tight-fisted optimizer" (https://kexue.fm/archives/9512,
https://github.com/bojone/tiger) for the non-finite rule and half precision, and
https://kexue.fm/archives/9736 for the embedding outliers of sign optimizers.

- The non-finite rule: keep the momentum, ``w <- (w - c) * 0.99 + c`` (``c = 1`` for
  LayerNorm gains) by default; ``shrink_ratio=1.0`` skips the step. Both against NumPy.
- The +-1/lambda drift of a rarely seen embedding row in a tiny model, its trajectory
  replayed in NumPy, and its absence under both remedies (lazy rows, Adam embeddings).
- The remedies and fp16 without loss scaling through the pretraining CLI (tiny BERT).

Every reference below is NumPy written here, in float64.
"""

import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras.optimizers import Tiger

BETA = 0.965


def make_variable(path, value):
    *scopes, name = path.split("/")

    def build(i):
        if i == len(scopes):
            return keras.Variable(np.array(value, "float32"), name=name)
        with keras.name_scope(scopes[i]):
            return build(i + 1)

    variable = build(0)
    assert variable.path == path
    return variable


def to_numpy(variables):
    return [ops.convert_to_numpy(v).astype("float64") for v in variables]


def velocity_of(optimizer, variable):
    return optimizer._registry().velocities[optimizer._var_key(variable)]


def momentum_of(optimizer, variable):
    return optimizer._momentums[optimizer._get_variable_index(variable)]


VALUES = {  # path -> initial value
    "Embedding-Token/embeddings": (6, 4),
    "Transformer-0-FeedForward/o_dense/kernel": (4, 3),
    "Transformer-0-FeedForward/o_dense/bias": (3,),
    "Transformer-0-FeedForward-Norm/gamma": (3,),
    "Transformer-0-FeedForward-Norm/beta": (3,),
}


def initial_values(rng):
    values = {p: rng.normal(size=s) * 0.2 for p, s in VALUES.items()}
    values["Transformer-0-FeedForward-Norm/gamma"] += 1.0
    return values


def numpy_tiger(values, steps, lr, wd=0.01, shrink=0.99, lazy=False, adam_embeddings=False,
                b_1=0.9, b_2=0.999, eps=1e-6):
    """Tiger in float64 from the blog's formulas (one whole-step non-finite flag).

    Returns the weights, the momenta and (Adam embeddings) the second moments.
    """
    paths = list(values)
    w = {p: np.array(values[p], "float64") for p in paths}
    m = {p: np.zeros_like(w[p]) for p in paths}
    v = {p: np.zeros_like(w[p]) for p in paths}
    for t, grads in enumerate(steps, start=1):
        grads = dict(zip(paths, grads))
        if not all(np.isfinite(g).all() for g in grads.values()):
            for p in paths:  # momentum kept; weights pulled towards their centre
                c = 1.0 if p.endswith("/gamma") else 0.0
                w[p] = (w[p] - c) * shrink + c
            continue
        for p in paths:
            g = np.asarray(grads[p], "float64")
            embedding = p.endswith("/embeddings")
            if p.split("/")[-1] in ("bias", "beta", "gamma"):
                eta, decay = 0.5 * lr, 0.0
            elif embedding:
                eta, decay = lr * np.sqrt((w[p] ** 2).mean(axis=-1, keepdims=True)), wd
            else:
                eta, decay = lr * np.sqrt((w[p] ** 2).mean()), wd
            if embedding and adam_embeddings:
                new_m = b_1 * m[p] + (1 - b_1) * g
                new_v = b_2 * v[p] + (1 - b_2) * g * g
                direction = (new_m / (1 - b_1 ** t)) / (np.sqrt(new_v / (1 - b_2 ** t)) + eps)
            else:
                new_m, new_v = BETA * m[p] + (1 - BETA) * g, v[p]
                direction = np.sign(new_m)
            new_w = w[p] - eta * (direction + decay * w[p])
            if lazy and embedding:
                seen = np.any(g != 0, axis=-1, keepdims=True)
                new_m, new_v, new_w = (np.where(seen, a, b) for a, b in
                                       ((new_m, m[p]), (new_v, v[p]), (new_w, w[p])))
            m[p], v[p], w[p] = new_m, new_v, new_w
    return [w[p] for p in paths], [m[p] for p in paths], [v[p] for p in paths]


def run_tiger(values, steps, **kwargs):
    variables = [make_variable(p, x) for p, x in values.items()]
    optimizer = Tiger(**kwargs)
    history = []
    for grads in steps:
        before = (to_numpy(variables), to_numpy(optimizer._momentums) if optimizer.built
                  else [np.zeros_like(x) for x in values.values()])
        optimizer.apply([ops.convert_to_tensor(np.asarray(g, "float32")) for g in grads],
                        variables)
        history.append(before)
    return variables, optimizer, history


def close(actual, expected, atol=2e-5):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=1e-5)


# ---------------------------------------------------------------------------
# 1. The non-finite rule
# ---------------------------------------------------------------------------

def test_default_is_the_posts_shrink():
    optimizer = Tiger()
    assert optimizer.shrink_ratio == 0.99
    assert Tiger.from_config(optimizer.get_config()).shrink_ratio == 0.99


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_step_keeps_momentum_and_shrinks_weights(bad):
    rng = np.random.RandomState(0)
    values = initial_values(rng)
    steps = [[rng.normal(size=s) for s in VALUES.values()] for _ in range(7)]
    steps[3][1][2, 0] = bad  # one kernel entry of step 4 (the other gradients are fine)
    steps[4][0][1, 1] = bad  # and an embedding entry of step 5: two bad steps in a row
    variables, optimizer, history = run_tiger(values, steps, learning_rate=0.01)
    # at the bad steps: momentum unchanged, w -> (w - c) * 0.99 + c, c = 1 for gamma only
    for t in (3, 4):
        w_before, m_before = history[t]
        w_after, m_after = history[t + 1]
        close(m_after, m_before, atol=0)
        for path, a, b in zip(values, w_after, w_before):
            c = 1.0 if path.endswith("Norm/gamma") else 0.0
            np.testing.assert_allclose(a, (b - c) * 0.99 + c, rtol=1e-6, atol=1e-7)
    expected_w, expected_m, _ = numpy_tiger(values, steps, lr=0.01)
    close(to_numpy(variables), expected_w)
    close(to_numpy(optimizer._momentums), expected_m)
    assert int(ops.convert_to_numpy(optimizer.iterations)) == 7


def test_skip_option_leaves_everything_in_place():
    rng = np.random.RandomState(1)
    values = initial_values(rng)
    steps = [[rng.normal(size=s) for s in VALUES.values()] for _ in range(5)]
    steps[2][3][0] = np.nan  # the gamma gradient of step 3
    variables, optimizer, history = run_tiger(values, steps, learning_rate=0.01,
                                              shrink_ratio=1.0)
    close(history[3][0], history[2][0], atol=0)
    close(history[3][1], history[2][1], atol=0)
    expected_w, expected_m, _ = numpy_tiger(values, steps, lr=0.01, shrink=1.0)
    close(to_numpy(variables), expected_w)
    close(to_numpy(optimizer._momentums), expected_m)


# ---------------------------------------------------------------------------
# 2. Embedding-outlier remedies
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("lazy", [False, True])
def test_adam_embeddings_match_numpy(lazy):
    rng = np.random.RandomState(2)
    values = initial_values(rng)
    steps = []
    for t in range(6):
        grads = [rng.normal(size=s) for s in VALUES.values()]
        grads[0][[1, 3 + t % 2]] = 0.0  # token 1 never seen, tokens 3/4 every other step
        steps.append(grads)
    steps[4][2][0] = np.nan  # and one non-finite step: m and v kept, weights shrunk
    variables, optimizer, _ = run_tiger(values, steps, learning_rate=0.02,
                                        embedding_optimizer="adam", lazy_embeddings=lazy)
    expected_w, expected_m, expected_v = numpy_tiger(values, steps, lr=0.02, lazy=lazy,
                                                     adam_embeddings=True)
    close(to_numpy(variables), expected_w)
    close(to_numpy(optimizer._momentums), expected_m)
    close(to_numpy([velocity_of(optimizer, variables[0])]), expected_v[:1])
    # the second moment exists for the embedding matrix only
    assert sum("velocity" in v.path for v in optimizer.variables) == 1
    config = optimizer.get_config()
    assert config["embedding_optimizer"] == "adam"
    assert Tiger.from_config(json.loads(json.dumps(config))).embedding_optimizer == "adam"


def test_remedy_arguments_are_checked():
    with pytest.raises(ValueError, match="embedding_optimizer must be"):
        Tiger(embedding_optimizer="sgd")
    with pytest.raises(ValueError, match="whole-batch"):
        Tiger(embedding_optimizer="adam", grad_accum_steps=2)
    with pytest.raises(ValueError, match="adam_beta_2"):
        Tiger(embedding_optimizer="adam", adam_beta_2=1.0)


VOCAB, RARE, LAMBDA, LR, BATCHES = 12, 11, 0.1, 0.1, 300


def _drift_run(**kwargs):
    """Fit a tiny classifier where token RARE is seen only in the first batch.

    Returns the optimizer, the embedding table, and the RARE row's weights,
    momentum and (Adam) second moment right after that first step.
    """
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    ids = rng.randint(1, RARE, size=(4 * BATCHES, 5)).astype("int32")
    ids[:4, 0] = RARE
    labels = (ids == 3).any(axis=1).astype("int32")
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 4, name="Embedding-Token")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="Classifier")(x))
    optimizer = Tiger(learning_rate=LR, weight_decay=LAMBDA, **kwargs)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False if keras.backend.backend() == "tensorflow" else "auto")
    table = model.get_layer("Embedding-Token").embeddings
    first = {}

    class AfterFirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                if hasattr(self.model, "jax_state_sync"):  # JAX keeps the state aside
                    self.model.jax_state_sync()
                first["w"] = ops.convert_to_numpy(table)[RARE].astype("float64")
                first["m"] = ops.convert_to_numpy(momentum_of(optimizer, table))[RARE]
                if kwargs.get("embedding_optimizer") == "adam":
                    first["v"] = ops.convert_to_numpy(velocity_of(optimizer, table))[RARE]

    history = model.fit(ids, labels, batch_size=4, epochs=1, shuffle=False, verbose=0,
                        callbacks=[AfterFirstStep()])
    assert np.isfinite(history.history["loss"]).all()
    return ops.convert_to_numpy(table).astype("float64"), first


def test_rare_embedding_row_drifts_to_one_over_lambda_without_remedy():
    table, first = _drift_run()
    w, m = first["w"], first["m"].astype("float64")
    assert np.all(m != 0) and np.abs(w).max() < 0.1
    for _ in range(BATCHES - 1):  # NumPy replay: no gradient, momentum keeps its sign
        m = BETA * m
        w = w - LR * np.sqrt(np.mean(w ** 2)) * (np.sign(m) + LAMBDA * w)
    np.testing.assert_allclose(table[RARE], w, rtol=1e-3, atol=1e-4)
    # the fixed point of sign(m) + lambda * w = 0: every component at -+1/lambda
    np.testing.assert_allclose(table[RARE], -np.sign(first["m"]) / LAMBDA, rtol=0.02)


def test_lazy_embeddings_stop_the_drift():
    table, first = _drift_run(lazy_embeddings=True)
    np.testing.assert_array_equal(table[RARE], first["w"])  # not moved after its one batch
    assert np.abs(table[RARE]).max() < 0.1


def test_adam_embeddings_stop_the_drift():
    table, first = _drift_run(embedding_optimizer="adam")
    w, m, v = first["w"], first["m"].astype("float64"), first["v"].astype("float64")
    for t in range(2, BATCHES + 1):  # NumPy replay of the unseen row under Adam
        m, v = 0.9 * m, 0.999 * v
        direction = (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-6)
        w = w - LR * np.sqrt(np.mean(w ** 2)) * (direction + LAMBDA * w)
    np.testing.assert_allclose(table[RARE], w, rtol=1e-3, atol=1e-5)
    assert np.abs(table[RARE]).max() < 0.02 / LAMBDA  # nowhere near +-1/lambda


# ---------------------------------------------------------------------------
# 3. The pretraining CLI: remedies and half precision without loss scaling
# ---------------------------------------------------------------------------

BASE = ["--config", "c.json", "--vocab", "v.txt", "--records", "r", "--out-dir", "o"]


@pytest.mark.parametrize("flags, message", [
    (["--optimizer", "adamw", "--lazy-embeddings"], "has no effect"),
    (["--optimizer", "lamb", "--lazy-embeddings"], "has no effect"),
    (["--optimizer", "adamw", "--embedding-optimizer", "adam"], "has no effect"),
    (["--optimizer", "lamb", "--embedding-optimizer", "adam"], "has no effect"),
    (["--optimizer", "tiger", "--loss-scale", "none"], "has no effect"),
    (["--optimizer", "tiger", "--mixed-precision", "float16", "--loss-scale", "none"],
     "has no effect"),
    (["--optimizer", "tiger", "--mixed-precision", "mixed_bfloat16", "--loss-scale", "none"],
     "has no effect"),
    (["--optimizer", "adamw", "--mixed-precision", "float16"], "needs --optimizer tiger"),
])
def test_cli_rejects_flags_without_effect(flags, message, capsys):
    from pretraining.pretraining import parse_args

    with pytest.raises(SystemExit):
        parse_args(BASE + flags)
    assert message in capsys.readouterr().err


def test_cli_remedy_flags_reach_tiger():
    from pretraining.pretraining import make_optimizer, parse_args

    args = parse_args(BASE + ["--optimizer", "tiger", "--lazy-embeddings",
                              "--embedding-optimizer", "adam", "--grad-accum", "2",
                              "--mixed-precision", "mixed_float16", "--loss-scale", "none"])
    optimizer = make_optimizer(args.optimizer, 0.1, args.weight_decay, args.grad_accum,
                               args.clipnorm, args.mixed_precision,
                               lazy_embeddings=args.lazy_embeddings,
                               embedding_optimizer=args.embedding_optimizer,
                               loss_scale=args.loss_scale)
    assert isinstance(optimizer, Tiger)  # no LossScaleOptimizer around it
    assert optimizer.lazy_embeddings and optimizer.embedding_optimizer == "adam"
    # both remedies need whole-batch gradients: Keras' accumulation, not Tiger's own
    assert optimizer.gradient_accumulation_steps == 2 and optimizer.grad_accum_steps == 1
    plain = make_optimizer("tiger", 0.1, 0.01, 2, 1.0)
    assert not plain.lazy_embeddings and plain.embedding_optimizer == "tiger"
    assert plain.grad_accum_steps == 2 and not plain.gradient_accumulation_steps
    scaled = make_optimizer("tiger", 0.1, 0.01, 1, 1.0, "mixed_float16")
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)  # the default stays
    with pytest.raises(ValueError, match="Tiger options"):
        make_optimizer("adamw", 0.1, 0.01, 1, 1.0, lazy_embeddings=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from test_pretraining_train import make_tiny_setup

    return make_tiny_setup(tmp_path_factory.mktemp("tiny_tiger"), kinds=("roberta",),
                           dropout=0.0)


def _newest_checkpoint(out):
    """``(meta, {path: array})`` of the newest training-state checkpoint in ``out``."""
    from pretraining.resume import CheckpointManager

    manager = CheckpointManager(os.path.join(out, "checkpoints"))
    meta, arrays = manager.read(manager.checkpoints()[-1][1])
    return meta, {spec[0]: arrays["v%05d" % i] for i, spec in enumerate(meta["variables"])}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="pretraining CLI is TF")
def test_cli_trains_with_both_remedies(tiny, tmp_path):
    from test_pretraining_train import checkpoint_tensors, cli_args

    from pretraining.pretraining import main

    out = str(tmp_path / "run")
    prefix = main(cli_args(tiny, out, **{"--optimizer": "tiger", "--lazy-embeddings": True,
                                         "--embedding-optimizer": "adam", "--grad-accum": 2,
                                         "--steps": 4, "--save-every": 4, "--no-jit": True}))
    meta, state = _newest_checkpoint(out)
    assert meta["batches"] == 8
    assert meta["trajectory"]["lazy_embeddings"] is True
    assert meta["trajectory"]["embedding_optimizer"] == "adam"
    velocities = [p for p in state if "velocity" in p]
    assert len(velocities) == 3, velocities  # token, segment and position tables
    assert all(np.isfinite(v).all() for v in checkpoint_tensors(prefix).values())


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="pretraining CLI is TF")
@pytest.mark.parametrize("policy", ["mixed_float16", "float16"])
def test_cli_fp16_tiger_without_loss_scaling(tiny, tmp_path, policy):
    """The post's claim: Tiger trains in half precision with no loss scaling at all."""
    from test_pretraining_train import checkpoint_tensors, cli_args, read_history

    from pretraining.pretraining import main

    out = str(tmp_path / policy)
    flags = {"--optimizer": "tiger", "--lr": 1e-2, "--steps": 200, "--warmup-steps": 20,
             "--save-every": 200, "--log-every": 10, "--mixed-precision": policy,
             "--no-jit": True}
    if policy == "mixed_float16":
        flags["--loss-scale"] = "none"
    prefix = main(cli_args(tiny, out, **flags))
    losses = [float(r["loss"]) for r in read_history(out)]
    assert len(losses) == 20 and np.isfinite(losses).all(), losses
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses  # ln(100) = 4.6 at start
    meta, state = _newest_checkpoint(out)
    assert meta["batches"] == 200
    assert not any("dynamic_scale" in p for p in state)  # no loss scaling
    kernels = [a for p, a in state.items() if p.endswith("kernel")]
    assert kernels and all(a.dtype == (np.float16 if policy == "float16" else np.float32)
                           for a in kernels)
    tensors = checkpoint_tensors(prefix)  # the export is a float32 Google checkpoint
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in tensors.values())
