"""What the tool recipes share: loading a BERT with its tokenizer, encoding
texts into padded batches, pooling token vectors into sentence vectors, and the
vocabulary entries a masked language model must never propose.

Used by ``basic_extract_features.py``, ``basic_masked_language_model.py``,
``basic_gibbs_sampling_via_mlm.py``, ``basic_make_uncased_model_cased.py`` and
``basic_simple_web_serving_simbert.py``. Import :mod:`common` before this
module (the scripts do), so that TensorFlow starts quietly.
"""

import numpy as np

from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer

from common import pad_batch, resolve_paths

#: the tokens an MLM is never asked to produce (besides ``[unused*]``)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: ``--pooling`` choices of :func:`pool`
POOLINGS = ("mean", "cls")


def load_bert(args, **build_kwargs):
    """``(tokenizer, model, (config, checkpoint, vocab))`` from the model flags
    of :func:`common.add_model_args`.

    ``build_kwargs`` go to ``build_transformer_model`` (e.g. ``with_mlm=True``:
    the model then outputs ``(batch, seq_len, vocab_size)`` probabilities;
    else ``(batch, seq_len, hidden_size)`` token vectors).

    Raises:
        FileNotFoundError: the config or vocabulary is missing (see
            :func:`common.resolve_paths`).
        CheckpointError: the checkpoint lacks a variable the model needs
            (e.g. the MLM head of a checkpoint pretrained without one).
    """
    config, checkpoint, vocab = resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    model = build_transformer_model(config, checkpoint, **build_kwargs)
    return tokenizer, model, (config, checkpoint, vocab)


def encode(tokenizer, texts, maxlen, bucket=8):
    """``(token_ids, segment_ids)``, both ``int32 (len(texts), length)``:
    ``[CLS] text [SEP]`` per row (cut to ``maxlen`` tokens), right-padded with
    ``[PAD]`` (id 0) to the longest row rounded up to ``bucket``."""
    ids = pad_batch([tokenizer.encode(text, maxlen=maxlen)[0] for text in texts],
                    bucket=bucket, maxlen=maxlen)
    return ids, np.zeros_like(ids)


def pool(hidden, token_ids, pooling="mean", normalize=True):
    """Sentence vectors ``(batch, hidden_size)`` from token vectors.

    Args:
        hidden: ``(batch, seq_len, hidden_size)`` last-layer token vectors.
        token_ids: ``(batch, seq_len)`` ids; id 0 (``[PAD]``) marks padding.
        pooling: ``'mean'``: the mean over the non-padding positions,
            ``[CLS]`` and ``[SEP]`` included (as sentence-transformers' mean
            pooling over the attention mask, e.g. all-MiniLM-L6-v2);
            ``'cls'``: the ``[CLS]`` vector.
        normalize: divide each vector by its L2 norm (cosine similarity is
            then a dot product).

    Raises:
        ValueError: an unknown ``pooling``.
    """
    hidden = np.asarray(hidden, "float32")
    if pooling == "mean":
        mask = (np.asarray(token_ids) != 0)[..., None].astype("float32")
        vectors = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
    elif pooling == "cls":
        vectors = hidden[:, 0]
    else:
        raise ValueError("pooling must be one of %s, got %r" % (", ".join(POOLINGS), pooling))
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return vectors


def sentence_embeddings(model, tokenizer, texts, maxlen=64, pooling="mean", normalize=True,
                        batch_size=64):
    """``float32 (len(texts), hidden_size)`` sentence vectors of ``texts`` (see
    :func:`pool`), computed ``batch_size`` texts per model call."""
    parts = []
    for start in range(0, len(texts), batch_size):
        ids, segments = encode(tokenizer, texts[start:start + batch_size], maxlen)
        hidden = model.predict_on_batch([ids, segments])
        parts.append(pool(hidden, ids, pooling, normalize))
    return np.concatenate(parts) if parts else np.zeros((0, model.output.shape[-1]), "float32")


def excluded_ids(tokenizer):
    """``int64`` ids an MLM must not propose: :data:`SPECIAL_TOKENS` and the
    ``[unused*]`` placeholders of Google's vocabularies."""
    return np.array(sorted(i for token, i in tokenizer.token_dict.items()
                           if token in SPECIAL_TOKENS
                           or (token.startswith("[unused") and token.endswith("]"))), "int64")


def is_character_token(token):
    """True for a one-character token that is a word character (letter, CJK
    character or digit), not punctuation or a space: what the MLM recipes mask."""
    return len(token) == 1 and token.isalnum()
