"""Keras masks on the models' outputs, as bert4keras 0.11.5 gave them.

In 0.11.5 ``Embedding-Token`` had ``mask_zero=True`` (position 0 never
masked, for T5's decoder start id 0) and every layer after it passed the
mask on, so the sequence outputs (hidden states, MLM / LM probabilities,
ELECTRA's discriminator, T5's encoder and decoder) carry the padding mask
and the one-vector outputs (pooler, NSP) carry none. Recipes read it: a
``Loss`` subclass's ``mask[1]`` (task_seq2seq_autotitle_csl_mt5), masked
pooling, GlobalPointer/CRF heads.

The reference is the padding pattern of the ids, computed here in NumPy;
losses and pooled vectors are checked against NumPy from the model's own
outputs. The masks must change no number: the families' attention ignores
them (``mask_keys=False``), checked on the layer against an unmasked call.
tests/test_backends.py reruns the file in its JAX process.
"""

import warnings

import keras
import numpy as np
import pytest

from bert4keras.backend import K
from bert4keras.layers import GlobalPointer, Loss, MaskedAdd, MultiHeadAttention
from bert4keras.models import build_transformer_model

TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position=16, dropout_rate=0.0)
IDS = np.array([[5, 6, 7, 0, 0], [0, 8, 9, 10, 0]], "int32")  # row 1 starts with id 0


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def padding_mask(ids):
    """0.11.5's rule: id 0 is padding, except at position 0."""
    keep = ids != 0
    keep[:, 0] = True
    return keep


def build(model, **options):
    keras.utils.set_random_seed(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        transformer = build_transformer_model(None, model=model, return_keras_model=False,
                                              **dict(TINY, **options))
    dropped = [str(w.message) for w in caught if "mask" in str(w.message)]
    assert not dropped, dropped  # no layer on the way drops the mask
    return transformer


def feeds(model, ids):
    return [ids, np.zeros_like(ids)][:len(model.inputs)]


def output_masks(outputs):
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [getattr(o, "_keras_mask", None) for o in outputs]


CASES = [  # (model, options, which outputs carry the padding mask)
    ("bert", {}, [True]),
    ("bert", dict(with_pool=True, with_mlm=True), [False, True]),
    ("bert", dict(with_nsp=True), [False]),
    ("bert", dict(application="unilm", with_mlm=True), [True]),
    ("bert", dict(application="lm", with_mlm=True, recompute=True), [True]),
    ("albert", dict(with_mlm=True), [True]),
    ("nezha", {}, [True]),
    ("roformer", {}, [True]),
    ("roformer_v2", dict(with_mlm=True), [True]),
    ("electra", dict(with_discriminator=True), [True]),
    ("gpt", {}, [True]),
    ("gpt2", {}, [True]),
    ("gpt2_ml", {}, [True]),
    ("t5.1.1", {}, [True]),
]


@pytest.mark.parametrize("model, options, masked", CASES,
                         ids=["%s-%s" % (m, "-".join(o) or "plain") for m, o, _ in CASES])
def test_outputs_carry_the_padding_mask(model, options, masked):
    transformer = build(model, **options)
    m = transformer.model
    assert [mask is not None for mask in output_masks(m.outputs)] == masked  # symbolic
    inputs = [IDS, IDS] if model.startswith("t5") else feeds(m, IDS)
    for mask, want in zip(output_masks(m(inputs)), masked):  # eager
        if want:
            np.testing.assert_array_equal(np_(mask), padding_mask(IDS))
        else:
            assert mask is None


def test_t5_encoder_and_decoder_masks_and_an_mt5_style_loss():
    """The encoder output has the encoder's padding, the decoder's output the
    decoder's; a 0.11.5 ``Loss`` reads the latter as ``mask[1]``."""
    t5 = build("t5.1.1")
    enc = np.array([[5, 6, 7, 8, 0, 0], [9, 10, 0, 0, 0, 0]], "int32")
    dec = np.array([[0, 11, 12, 1, 0], [0, 13, 1, 0, 0]], "int32")  # start id 0, end id 1
    np.testing.assert_array_equal(np_(t5.encoder(enc)._keras_mask), padding_mask(enc))
    context = t5.encoder(enc)
    np.testing.assert_array_equal(np_(t5.decoder([context, keras.ops.convert_to_tensor(dec)])
                                      ._keras_mask),
                                  padding_mask(dec))
    seen = {}

    class CrossEntropy(Loss):
        """Next-token cross-entropy over the decoder's own mask (mt5 recipe style)."""

        def compute_loss(self, inputs, mask=None):
            seen["mask"] = mask
            y_true, y_pred = inputs
            y_mask = K.cast(mask[1], K.floatx())[:, 1:]
            loss = K.sparse_categorical_crossentropy(y_true[:, 1:], y_pred[:, :-1])
            return K.sum(loss * y_mask) / K.sum(y_mask)

    model = t5.model
    train = keras.Model(model.inputs, CrossEntropy(1)([model.inputs[1], model.outputs[0]]))
    train.compile(optimizer="sgd")
    loss = train.evaluate([enc, dec], verbose=0)
    assert seen["mask"][0] is None and seen["mask"][1] is not None  # an Input has none
    probs = np_(model.predict([enc, dec], verbose=0))
    keep = padding_mask(dec)[:, 1:]
    picked = np.take_along_axis(probs[:, :-1], dec[:, 1:, None], -1)[..., 0]
    want = (-np.log(picked) * keep).sum() / keep.sum()
    np.testing.assert_allclose(loss, want, rtol=1e-4)


def test_user_heads_receive_the_mask():
    """Masked average pooling and GlobalPointer after a BERT, as in 0.11.5."""
    bert = build("bert")
    ids = np.array([[5, 6, 7, 0, 0], [8, 9, 10, 11, 0]], "int32")
    pooled = keras.layers.GlobalAveragePooling1D()(bert.model.output)
    spans = GlobalPointer(heads=2, head_size=4, tril_mask=False)(bert.model.output)
    model = keras.Model(bert.model.inputs, [pooled, spans, bert.model.output])
    pooled, spans, hidden = (np_(x) for x in model.predict(feeds(model, ids), verbose=0))
    keep = padding_mask(ids)
    want = (hidden * keep[..., None]).sum(1) / keep.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled, want, rtol=1e-5, atol=1e-6)
    padded = ~(keep[:, None, :, None] & keep[:, None, None, :])
    padded = np.broadcast_to(padded, spans.shape)
    assert (spans[padded] < -1e11).all() and (np.abs(spans[~padded]) < 1e6).all()


def test_family_attention_ignores_the_masks():
    """``mask_keys=False`` (what the families build): the Keras masks change
    no number; ``mask_keys=True`` (the default) hides the masked keys."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    keep = padding_mask(IDS)
    masks = [keras.ops.convert_to_tensor(keep)] * 3
    for mask_keys in (False, True):
        layer = MultiHeadAttention(heads=2, head_size=4, mask_keys=mask_keys)
        plain = np_(layer([x, x, x]))
        masked = np_(layer([x, x, x], mask=masks))
        if mask_keys:
            assert not np.allclose(plain, masked)
        else:
            np.testing.assert_array_equal(plain, masked)
        assert MultiHeadAttention.from_config(layer.get_config()).mask_keys is mask_keys
    families = build("bert").model.get_layer("Transformer-0-MultiHeadSelfAttention")
    assert families.mask_keys is False


def test_masked_add_ands_the_masks():
    """tf.keras 2's rule: an input without a mask counts as all True."""
    a, b = np.array([[1, 1, 0]], bool), np.array([[1, 0, 0]], bool)
    layer = MaskedAdd()
    np.testing.assert_array_equal(np_(layer.compute_mask([None, None], [a, None])), a)
    np.testing.assert_array_equal(np_(layer.compute_mask([None, None], [a, b])), a & b)
    assert layer.compute_mask([None, None], [None, None]) is None
    assert keras.layers.Add().compute_mask([None, None], [a, None]) is None  # Keras 3's


def test_masks_survive_a_keras_reload(tmp_path):
    bert = build("bert", with_mlm=True)
    path = str(tmp_path / "bert.keras")
    bert.model.save(path)
    loaded = keras.saving.load_model(path)
    before, after = bert.model(feeds(bert.model, IDS)), loaded(feeds(loaded, IDS))
    np.testing.assert_array_equal(np_(after._keras_mask), padding_mask(IDS))
    np.testing.assert_allclose(np_(after), np_(before), rtol=1e-6, atol=1e-7)
    assert loaded.get_layer("Embedding-Token").mask_zero is True
    assert loaded.get_layer("Transformer-0-MultiHeadSelfAttention").mask_keys is False


def test_pretraining_lm_loss_is_not_reweighted_by_the_padding_mask(tmp_path):
    """The LM logits of ``pretraining`` drop the padding mask (``DropMask``):
    with the records' weights (zero on padding, normalised) the compiled loss
    is ``sum(w * ce) / positions``, computed here in NumPy, not Keras's
    mask-reweighted ``sum(w * ce) / valid``."""
    import json

    import keras
    import numpy as np

    from pretraining.model import build_pretraining_model

    config = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=32, type_vocab_size=2,
                  hidden_act="gelu", hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(config))
    model, _ = build_pretraining_model(str(path), "gpt", 4)
    assert getattr(model.output, "_keras_mask", None) is None
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, (3, 10))
    ids[0, 6:] = 0
    ids[1, 3:] = 0
    y = np.roll(ids, -1, 1)
    w = (y > 0).astype("float32")
    w /= w.sum()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.evaluate([ids, np.zeros_like(ids)], y, sample_weight=w, verbose=0)
    logits = np.asarray(model.predict([ids, np.zeros_like(ids)], verbose=0), "float64")
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    assert loss == pytest.approx((w * ce).sum() / ce.size, rel=1e-4)
