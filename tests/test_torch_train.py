"""Training through oneDNN on the PyTorch backend (bert4keras.layers.torch_train):
a ``Dense`` and a tied output projection with gradients give the outputs and
gradients of torch's own matmul (``torch_train.ENABLED`` off), each product
being oneDNN's inner product (counted); a whole training step of a small BERT
moves the weights as the plain path does.

torch only: this file runs in tests/test_backends.py's ``KERAS_BACKEND=torch``
process; on the suite's TensorFlow backend its tests are skipped there.
"""

import keras
import numpy as np
import pytest

from bert4keras.layers import direct, torch_train

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="runs in tests/test_backends.py's torch process")


def count_onednn_calls(monkeypatch):
    calls = []
    op = direct._onednn_op()
    if op is not None:
        monkeypatch.setattr(direct, "_ONEDNN_OP", [lambda *a: calls.append(1) or op(*a)])
    return calls


def run(fn, enabled, monkeypatch):
    monkeypatch.setattr(torch_train, "ENABLED", enabled)
    return fn()


def dense_grads(layer, x, weight):
    """Outputs and gradients (inputs, kernel, bias) of a weighted sum of ``layer(x)``."""
    for tensor in (x, layer._kernel.value, layer.bias.value):
        tensor.grad = None
    y = layer(x)
    (y * weight).sum().backward()
    return [t.detach().clone().numpy() for t in
            (y, x.grad, layer._kernel.value.grad, layer.bias.value.grad)]


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_dense_with_gradients_equals_torch_matmul(activation, monkeypatch):
    import torch

    from bert4keras.layers import Dense

    layer = Dense(512, activation=activation)
    layer.build((None, 256))  # 2**17 weights: the smallest kernel oneDNN takes
    x = torch.randn(2, 64, 256, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weight = torch.linspace(-1, 1, 512)
    calls = count_onednn_calls(monkeypatch)
    got = run(lambda: dense_grads(layer, x, weight), True, monkeypatch)
    if direct._onednn_op() is not None:
        assert len(calls) == 3  # forward, input gradient, kernel gradient
    want = run(lambda: dense_grads(layer, x, weight), False, monkeypatch)
    assert len(calls) in (0, 3)
    for name, g, w in zip(("outputs", "dx", "dkernel", "dbias"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4 * np.abs(w).max(), err_msg=name)


def test_tied_output_projection_with_gradients(monkeypatch):
    import torch

    from bert4keras.layers import Embedding

    table = Embedding(1024, 128)
    table.build((None, None))
    x = torch.randn(128, 128, generator=torch.Generator().manual_seed(1), requires_grad=True)

    def grads():
        x.grad = table.embeddings.value.grad = None
        y = table(x, mode="dense")
        (y * torch.linspace(-1, 1, 1024)).sum().backward()
        return [t.detach().clone().numpy() for t in (y, x.grad, table.embeddings.value.grad)]

    calls = count_onednn_calls(monkeypatch)
    got = run(grads, True, monkeypatch)
    assert len(calls) == (3 if direct._onednn_op() is not None else 0)
    want = run(grads, False, monkeypatch)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4 * np.abs(w).max())


def test_declines_few_rows_small_kernels_and_other_dtypes():
    import torch

    w = torch.randn(512, 256, requires_grad=True)
    assert torch_train.linear(torch.randn(8, 256), w) is None  # fewer than MIN_ROWS rows
    assert torch_train.linear(torch.randn(128, 16), torch.randn(16, 16)) is None  # small kernel
    assert torch_train.linear(torch.randn(128, 256, dtype=torch.bfloat16),
                              w.to(torch.bfloat16)) is None
    with torch.no_grad():  # the inference path (bert4keras.layers.direct) handles that
        assert torch_train.linear(torch.randn(128, 256), w) is None


def test_training_step_moves_weights_as_torch_matmul(monkeypatch):
    """A small BERT (FFN kernels of 2**17 weights) trained one AdamW step
    through oneDNN and through torch's matmul from the same weights: the same
    loss and the same weights after the step (to float32 summation order)."""
    from bert4keras.models import build_transformer_model

    def step(enabled):
        monkeypatch.setattr(torch_train, "ENABLED", enabled)
        keras.utils.set_random_seed(0)
        model = build_transformer_model(None, model="bert", vocab_size=100, hidden_size=256,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=512, max_position=64,
                                        with_mlm=True)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy())
        rng = np.random.RandomState(0)
        ids = rng.randint(1, 100, (4, 64)).astype("int32")
        loss = float(model.train_on_batch([ids, np.zeros_like(ids)], ids))
        return loss, [v.numpy() for v in model.trainable_variables]

    calls = count_onednn_calls(monkeypatch)
    loss, weights = step(True)
    if direct._onednn_op() is not None:
        assert len(calls) == 2 * 2 * 3  # the two FFN kernels of each block (2**17 weights)
    plain_loss, plain_weights = step(False)
    assert abs(loss - plain_loss) < 1e-4 * abs(plain_loss)
    for got, want in zip(weights, plain_weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_dropout_gradient_is_the_mask():
    """bert4keras' Dropout on torch (int16 keep tests): the gradient of the
    sum is ``1 / (1 - rate)`` where kept and 0 where dropped."""
    import torch

    from bert4keras.layers import Dropout

    x = torch.ones(4, 8, 16, requires_grad=True)
    y = Dropout(0.25, seed=4)(x, training=True)
    y.sum().backward()
    kept = (y != 0).detach().numpy()
    assert 0.5 < kept.mean() < 0.95
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, 1 / 0.75, 0.0), rtol=1e-6)
